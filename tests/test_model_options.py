"""The model and training options: encoders, residual decoding, warps, the transformer's context,
L1, scheduled sampling, input noise and their validation. The configs that choose them, and one
real CLI run with all of them: test_configs.py.

The contract every core honours (shapes, state passing, learning) is in test_cores.py.
"""


import math

import pytest
import torch

from world_models import rollout
from world_models.errors import UserError
from world_models.metrics import QUANTISATION_MSE
from world_models.models.cores import CausalTransformer, build_core
from world_models.models.frames import build_frame_codec
from world_models.models.sampling import (
    true_frame_probability,
    with_decay_steps,
)
from world_models.models.scheduled import scheduled_rollout
from world_models.models.warps import build_warp
from world_models.models.world_model import WorldModel

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")  # no Trainer here
TOL = {"rtol": 1e-5, "atol": 1e-5}
SHAPE = (3, 16, 16)


def make_model(seed: int = 0, **options) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(hidden_size=16, frame_shape=SHAPE, **options)


def make_batch(B: int = 3, L: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"frames": torch.rand(B, L, *SHAPE, generator=g),
            "actions": torch.rand(B, L, 3, generator=g) * 2 - 1}


# -- the transformer core ------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 3, 6])
def test_transformer_output_at_t_ignores_later_inputs(t):
    core = build_core("transformer", 5, 16)
    x = torch.randn(2, 8, 5)
    later = x.clone()
    later[:, t + 1 :] += torch.randn_like(later[:, t + 1 :])
    with torch.no_grad():
        y, y_later = core(x)[0], core(later)[0]
    torch.testing.assert_close(y_later[:, : t + 1], y[:, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(y_later[:, t + 1 :], y[:, t + 1 :])  # later inputs do matter


@pytest.mark.parametrize("T", [4, 11], ids=["fits", "slides"])
def test_transformer_step_by_step_equals_one_call(T):
    """Within max_context (4) and past it, where every step sees its own last 4 steps."""
    torch.manual_seed(0)
    core = CausalTransformer(5, 8, max_context=4)
    x = torch.randn(2, T, 5)
    with torch.no_grad():
        y_full, _ = core(x)
        state, steps = None, []
        for t in range(T):
            y, state = core(x[:, t : t + 1], state)
            steps.append(y)
            assert state[0].shape == (2, min(t + 1, 3), 8)  # at most max_context - 1 steps
        y_window = core(x[:, -4:])[0][:, -1]  # the last step from its context alone
    torch.testing.assert_close(torch.cat(steps, dim=1), y_full, **TOL)
    torch.testing.assert_close(y_full[:, -1], y_window, **TOL)


# -- frame encoders and decoders, residual -------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
def test_conv_encoder_and_decoder_shapes(size):
    encoder, decoder = build_frame_codec("conv", (3, size, size), hidden_size=128)
    features = encoder(torch.rand(2, 5, 3, size, size))
    assert features.shape == (2, 5, encoder.output_size) == (2, 5, 128)
    assert decoder(torch.randn(2, 5, 128)).shape == (2, 5, 3, size, size)


@pytest.mark.parametrize("size", [32, 64])
def test_pooled_dash_encoder_pools_the_scene_and_keeps_the_dashboard_pixels(size):
    """The bottom eighth of the frame (CarRacing's dashboard) reaches the core pixel for
    pixel; the scene above it as 2x2 averages. A one-pixel change of a bar moves one feature
    by its full size; the same change in the scene moves one by a quarter of it."""
    encoder, decoder = build_frame_codec("pooled_dash", (3, size, size), hidden_size=16)
    frames = torch.rand(2, 3, 3, size, size)
    features = encoder(frames)
    dash = size // 8
    assert features.shape == (2, 3, encoder.output_size)
    assert encoder.output_size == 3 * ((size - dash) // 2 * size // 2 + dash * size)
    torch.testing.assert_close(features[..., -3 * dash * size:],
                               frames[..., -dash:, :].flatten(2), rtol=0, atol=0)
    for row, expected in ((size - 1, 1.0), (0, 0.25)):  # a dashboard pixel, a scene pixel
        bumped = frames.clone()
        bumped[0, 0, 1, row, 5] += 1.0
        change = (encoder(bumped) - features).abs()
        assert change.sum().item() == pytest.approx(expected) and change.max() == change.sum()
    assert decoder(torch.randn(2, 3, 16)).shape == (2, 3, 3, size, size)


def test_conv_model_at_report_sizes_is_small():
    model = WorldModel(core="builtin", hidden_size=128, encoder="conv", frame_shape=(3, 32, 32))
    assert sum(p.numel() for p in model.parameters()) < 1_000_000


def test_flat_model_keeps_the_state_dict_of_older_checkpoints():
    keys = set(make_model().state_dict())
    assert keys == {"core.weight_ih_l0", "core.weight_hh_l0", "core.bias_ih_l0",
                    "core.bias_hh_l0", "decoder.weight", "decoder.bias"}


@pytest.mark.parametrize("encoder", ["flat", "conv", "pooled_dash"])
@pytest.mark.parametrize("core", ["builtin", "gru", "transformer"])
def test_untrained_residual_model_copies_the_last_frame(core, encoder):
    batch = make_batch()
    model = make_model(core=core, encoder=encoder, residual=True)
    predicted = rollout.teacher_forcing(model, batch["frames"], batch["actions"][:, :-1])
    torch.testing.assert_close(predicted, batch["frames"][:, :-1], rtol=0, atol=0)
    plain = make_model(core=core, encoder=encoder)  # without residual, not a copy
    assert not torch.allclose(rollout.teacher_forcing(plain, batch["frames"],
                                                      batch["actions"][:, :-1]), predicted)


@pytest.mark.parametrize("core,encoder,residual",
                         [("gru", "conv", True), ("transformer", "flat", False)])
def test_world_model_with_options_learns_a_batch(core, encoder, residual):
    model, batch = make_model(core=core, encoder=encoder, residual=residual), make_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = model.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Random frames: a 16-feature conv model memorises them slowly, but it does.
    assert losses[-1] < 0.85 * losses[0], losses


def test_l1_weight_adds_the_mean_absolute_error():
    batch = make_batch()
    frames, actions = batch["frames"], batch["actions"]
    model = make_model(l1_weight=0.5)
    error = model(frames[:, :-1], actions[:, :-1])[0] - frames[:, 1:]  # [B, L-1, 3, H, W]
    mse, mae = (error**2).mean(), error.abs().mean()
    torch.testing.assert_close(model.training_step(batch, 0), mse + 0.5 * mae)
    torch.testing.assert_close(model.window_loss(batch), mse)  # val/test stay plain MSE


def test_log_mse_weight_adds_minus_a_tenth_of_the_frames_mean_psnr():
    model = make_model(log_mse_weight=0.01)
    truth = torch.full((2, 3, 3, 8, 8), 0.5)  # [B, T, 3, H, W]
    pred = truth.clone()
    pred[0] += 0.1  # MSE 1e-2: 20 dB; every frame of sequence 1 is exact: capped at 58.9 dB
    psnr = torch.tensor([20.0] * 3 + [10 * math.log10(12 * 255**2)] * 3)
    extra = model.objective(pred, truth) - torch.nn.functional.mse_loss(pred, truth)
    torch.testing.assert_close(extra, 0.01 * -psnr.mean() / 10, rtol=1e-3, atol=0)
    # and its gradient is MSE's plus the term's, though both come from one set of squares
    pred = (truth + 0.1 * torch.randn(truth.shape)).requires_grad_()
    model.objective(pred, truth).backward()
    reference = pred.detach().clone().requires_grad_()
    per_frame = (reference - truth).pow(2).flatten(2).mean(-1)
    (torch.nn.functional.mse_loss(reference, truth)
     + 0.01 * torch.log10(per_frame + QUANTISATION_MSE).mean()).backward()
    torch.testing.assert_close(pred.grad, reference.grad)


# -- warps: the next frame as the current one moved ----------------------------------------


@pytest.mark.parametrize("warp", ["affine", "flow"])
@pytest.mark.parametrize("core,encoder", [("builtin", "flat"), ("scratch", "conv")])
def test_untrained_warp_model_copies_the_last_frame(core, encoder, warp):
    batch = make_batch()
    model = make_model(core=core, encoder=encoder, warp=warp)
    predicted = rollout.teacher_forcing(model, batch["frames"], batch["actions"][:, :-1])
    torch.testing.assert_close(predicted, batch["frames"][:, :-1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("warp", ["affine", "flow"])
def test_warp_moves_pixels_by_what_its_head_says(warp):
    """A head whose output is a shift of one pixel to the left shifts every row by one."""
    module = build_warp(warp, SHAPE, hidden_size=4)
    x_shift = slice(0, module.head.bias.numel() // 2) if warp == "flow" else 2  # x channel, t_x
    with torch.no_grad():
        module.head.bias[x_shift] += 2 / SHAPE[2]  # 1 pixel in normalised coordinates
    frames = torch.rand(2, 3, *SHAPE)
    moved = module(torch.zeros(2, 3, 4), frames)
    torch.testing.assert_close(moved[..., :-1], frames[..., 1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(moved[..., -1], frames[..., -1], rtol=0, atol=1e-5)  # border


def test_flow_warp_upsamples_its_field_bilinearly():
    """The field's upsampling, a fixed matrix product, is the bilinear interpolation of the
    coarse field the head predicts, added to the identity grid: the warp samples where
    F.interpolate's field says."""
    module = build_warp("flow", (3, 16, 24), hidden_size=4)  # not square: both axes
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        module.head.weight.normal_(0, 0.2, generator=g)
    hidden, frames = torch.randn(2, 3, 4, generator=g), torch.rand(2, 3, 3, 16, 24, generator=g)
    coarse = module.head(hidden).reshape(6, 2, 4, 6)
    field = torch.nn.functional.interpolate(coarse, size=(16, 24), mode="bilinear",
                                            align_corners=False)
    identity = torch.nn.functional.affine_grid(torch.eye(2, 3)[None], [1, 1, 16, 24],
                                               align_corners=False)
    expected = torch.nn.functional.grid_sample(
        frames.flatten(0, 1), identity + field.permute(0, 2, 3, 1), mode="bilinear",
        padding_mode="border", align_corners=False).unflatten(0, (2, 3))
    assert (field.abs() > 0.05).any()  # the field moves pixels
    torch.testing.assert_close(module(hidden, frames), expected, rtol=0, atol=1e-5)


def sliding_batch(B: int = 4, L: int = 6) -> dict[str, torch.Tensor]:
    """Frames that slide one pixel left per step: blobs of colour, no new content but the edge."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(B, 3, SHAPE[1] // 4, (SHAPE[2] + L) // 4 + 1, generator=g)
    wide = torch.nn.functional.interpolate(coarse, scale_factor=4, mode="bilinear")
    frames = torch.stack([wide[..., t : t + SHAPE[2]] for t in range(L)], dim=1)
    return {"frames": frames.contiguous(), "actions": torch.zeros(B, L, 3)}


@pytest.mark.parametrize("warp", ["affine", "flow"])
def test_warp_model_learns_motion_that_copying_misses(warp):
    model, batch = make_model(warp=warp), sliding_batch()
    frames = batch["frames"]
    copy_last = torch.nn.functional.mse_loss(frames[:, :-1], frames[:, 1:]).item()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = model.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.window_loss(batch).item() < 0.5 * copy_last


# -- scheduled sampling and noise ----------------------------------------------------------


def test_linear_schedule_endpoints():
    schedule = {"schedule": "linear", "start": 0.9, "end": 0.1, "decay_steps": 100}
    got = [true_frame_probability(schedule, s) for s in (0, 50, 100, 1000)]
    assert got == pytest.approx([0.9, 0.5, 0.1, 0.1])
    assert true_frame_probability({"schedule": "none"}, 10**6) == 1.0


def test_linear_decay_is_a_fraction_of_the_runs_steps_unless_given_in_steps():
    schedule = {"schedule": "linear", "start": 1.0, "end": 0.0, "decay": 0.6, "decay_steps": None}
    assert with_decay_steps(schedule, 10800)["decay_steps"] == 6480  # the default data's 30 epochs
    assert with_decay_steps(schedule, 15)["decay_steps"] == 9
    assert with_decay_steps(schedule, 1)["decay_steps"] == 1  # at least one step
    assert with_decay_steps({**schedule, "decay_steps": 100}, 15)["decay_steps"] == 100


@pytest.mark.parametrize("schedule", [
    {"schedule": "linear", "start": 1.0, "end": 0.0, "decay_steps": 300},
    {"schedule": "exponential", "start": 1.0, "end": 0.0, "k": 0.99},
    {"schedule": "inverse_sigmoid", "start": 1.0, "end": 0.2, "k": 50},
], ids=lambda s: s["schedule"])
def test_schedules_fall_from_start_to_end(schedule):
    probs = [true_frame_probability(schedule, step) for step in range(0, 10**5, 25)]
    assert all(a >= b for a, b in zip(probs, probs[1:], strict=False))
    assert probs[0] > probs[-1] == pytest.approx(schedule["end"], abs=1e-6)
    assert probs[0] == pytest.approx(schedule["start"], abs=0.02)


@pytest.mark.parametrize("core", ["builtin", "transformer"])
def test_scheduled_rollout_at_1_and_0_is_teacher_forcing_and_autoregressive(core):
    model, batch = make_model(core=core).eval(), make_batch()
    frames, actions = batch["frames"], batch["actions"][:, :-1]
    with torch.no_grad():
        always_true = scheduled_rollout(model, frames, actions, 1.0)
        never_true = scheduled_rollout(model, frames, actions, 0.0)
        mixed = scheduled_rollout(model, frames, actions, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(always_true, rollout.teacher_forcing(model, frames, actions), **TOL)
    torch.testing.assert_close(never_true, rollout.autoregressive(model, frames, actions), **TOL)
    assert not torch.allclose(mixed, always_true) and not torch.allclose(mixed, never_true)


def test_input_noise_is_applied_in_training_only():
    batch, noisy, clean = make_batch(), make_model(input_noise=0.1), make_model()
    assert noisy.training_step(batch, 0) != noisy.training_step(batch, 0)
    assert clean.training_step(batch, 0) == clean.training_step(batch, 0)
    assert noisy.window_loss(batch) == noisy.window_loss(batch) == clean.window_loss(batch)
    frames, actions = batch["frames"], batch["actions"][:, :-1]
    assert torch.equal(rollout.autoregressive(noisy, frames, actions),
                       rollout.autoregressive(clean, frames, actions))


# -- validation ----------------------------------------------------------------------------

LINEAR = {"schedule": "linear", "start": 1.0, "end": 0.0, "decay_steps": 10, "k": None}
BAD = [
    ({"encoder": "mlp"}, "model.encoder"),
    ({"encoder": "conv", "frame_shape": (3, 20, 20)}, "model.encoder"),
    ({"core": "transformer", "hidden_size": 10}, "model.hidden_size"),
    ({"warp": "perspective"}, "model.warp"),
    ({"l1_weight": -0.1}, "model.l1_weight"),
    ({"log_mse_weight": -1.0}, "model.log_mse_weight"),
    ({"input_noise": -0.01}, "train.input_noise"),
    ({"scheduled_sampling": {**LINEAR, "schedule": "cosine"}}, "train.scheduled_sampling.schedule"),
    ({"scheduled_sampling": {**LINEAR, "start": 1.5}}, "train.scheduled_sampling.start"),
    ({"scheduled_sampling": {**LINEAR, "decay_steps": 0}}, "train.scheduled_sampling.decay_steps"),
    ({"scheduled_sampling": {**LINEAR, "decay_steps": None, "decay": 1.5}},
     "train.scheduled_sampling.decay"),
    ({"scheduled_sampling": {**LINEAR, "schedule": "exponential"}}, "train.scheduled_sampling.k"),
    ({"scheduled_sampling": {**LINEAR, "schedule": "inverse_sigmoid", "k": 0.5}},
     "train.scheduled_sampling.k"),
    ({"scheduled_sampling": {**LINEAR, "warmup": 3}}, "train.scheduled_sampling.warmup"),
    ({"scheduled_sampling": {**LINEAR, "draw": "step"}}, "train.scheduled_sampling.draw"),
    ({"scheduled_sampling": LINEAR, "protocol": "per_step"}, "train.scheduled_sampling.schedule"),
]


@pytest.mark.parametrize("options,key", BAD, ids=[key for _, key in BAD])
def test_bad_options_are_refused_naming_the_key(options, key):
    options = {"frame_shape": SHAPE, **options}
    with pytest.raises(UserError, match=f"^{key}: ") as err:
        WorldModel(**options)
    assert "\n" not in str(err.value)
