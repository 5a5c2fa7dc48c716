"""Open-loop training (the model learns from its own rollouts), the keep gate, and the two
metrics that say whether a dream keeps the road: road IoU and sharpness."""

import csv

import pytest
import torch

from tests.helpers import compose_config, train_here
from world_models import rollout
from world_models.data.datamodule import CarRacingDataModule
from world_models.errors import UserError
from world_models.metrics import (
    per_step_metrics,
    road_iou,
    road_mask,
    sharpness,
    step_ranges,
    steps_worse,
)
from world_models.models.losses import WindowedSSIM, fast_ssim, windowed_ssim
from world_models.models.sampling import unroll
from world_models.models.world_model import WorldModel

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")  # no Trainer here
SHAPE = (3, 16, 16)


def solid(rgb, size: int = 16) -> torch.Tensor:
    """A frame [3, size, size] of one colour given in 0..255."""
    return (torch.tensor(rgb, dtype=torch.float32) / 255).view(3, 1, 1).expand(3, size, size)


ROAD, GRASS, BACKGROUND = solid((102, 102, 102)), solid((102, 230, 102)), solid((102, 204, 102))


def road_left_grass_right() -> torch.Tensor:
    frame = GRASS.clone()
    frame[:, :, :8] = ROAD[:, :, :8]
    return frame


# -- road IoU and sharpness on frames made by hand -----------------------------------------


def test_road_mask_of_the_palette():
    assert road_mask(ROAD)[:14].all()  # above the indicator bar (the bottom 2 of 16 rows)
    assert not road_mask(ROAD)[14:].any()
    assert not road_mask(GRASS).any() and not road_mask(BACKGROUND).any()
    assert not road_mask(solid((0, 0, 0))).any()  # the indicator bar
    assert not road_mask(solid((255, 0, 0))).any()  # kerbs, the car
    # Area-averaged to a lower resolution: a pixel 3/4 road is road, 1/4 road is not.
    assert road_mask(0.75 * ROAD + 0.25 * BACKGROUND)[:14].all()
    assert not road_mask(0.25 * ROAD + 0.75 * BACKGROUND).any()


def test_road_iou_known_values():
    half = road_left_grass_right()
    frames = torch.stack([ROAD, GRASS, half, GRASS])
    truths = torch.stack([ROAD, ROAD, ROAD, GRASS])
    # road/road, grass/road, half/road (8 of 16 columns), and no road in either (they agree)
    torch.testing.assert_close(road_iou(frames, truths), torch.tensor([1.0, 0.0, 0.5, 1.0]))


def test_sharpness_known_values():
    half = road_left_grass_right()[None]
    assert sharpness(half, half).item() == pytest.approx(1.0)
    # A 3-tap box blur across the edge turns one step of size d into three of d/3: the sum of
    # squared differences across falls from d^2 to 3 (d/3)^2 = d^2 / 3; none are added down.
    blurred = half.clone()
    blurred[..., 7] = (half[..., 6] + half[..., 7] + half[..., 8]) / 3
    blurred[..., 8] = (half[..., 7] + half[..., 8] + half[..., 9]) / 3
    assert sharpness(blurred, half).item() == pytest.approx(1 / 3, rel=1e-5)
    assert sharpness(ROAD[None], half).item() == 0.0  # a flat frame has no detail
    assert sharpness(half, ROAD[None] + 0.0).item() > 1e6  # detail where the truth has none


def test_per_step_metrics_include_road_iou_and_sharpness():
    truth = road_left_grass_right().expand(2, 3, *SHAPE).clone()  # [B=2, T=3, 3, H, W]
    values = per_step_metrics(truth, truth)
    assert set(values) >= {"road_iou", "sharpness"}
    assert torch.equal(values["road_iou"], torch.ones(2, 3))
    torch.testing.assert_close(values["sharpness"], torch.ones(2, 3))


def test_steps_worse_than_the_baselines():
    def metrics(mse, ssim):  # two sequences with the same values
        mse, ssim = torch.tensor([mse, mse]), torch.tensor([ssim, ssim])
        return {"mse": mse, "psnr": -10 * mse.log10(), "ssim": ssim, "road_iou": ssim}

    values = {"autoregressive": metrics([1.0, 2.0, 3.0, 4.0], [0.9, 0.8, 0.7, 0.6]),
              "copy_last": metrics([2.0, 2.0, 2.0, 5.0], [0.5, 0.9, 0.5, 0.9]),
              "mean_frame": metrics([3.0, 3.0, 3.0, 3.0], [0.8, 0.8, 0.8, 0.8])}
    worse = steps_worse(values, "autoregressive", ("copy_last", "mean_frame"))
    assert worse["mse"] == {"copy_last": [3], "mean_frame": [4]}
    assert worse["psnr"] == worse["mse"]
    assert worse["ssim"] == {"copy_last": [2, 4], "mean_frame": [3, 4]}
    assert step_ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10" and step_ranges([]) == ""


def test_fast_ssim_equals_torchmetrics_and_has_gradients():
    from torchmetrics.functional.image import structural_similarity_index_measure

    g = torch.Generator().manual_seed(0)
    truth = torch.rand(6, 3, 32, 24, generator=g)  # not square: both axes' windows are used
    pred = (truth + 0.2 * torch.randn(truth.shape, generator=g)).clamp(0, 1).requires_grad_()
    expected = structural_similarity_index_measure(pred, truth, data_range=1.0,
                                                   reduction="none")
    got = fast_ssim(pred, truth)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    got.sum().backward()
    assert pred.grad.abs().sum() > 0


def test_fast_ssims_written_out_gradient_is_autograds():
    """WindowedSSIM's backward, written out, against autograd through windowed_ssim: in
    float64 by gradcheck, and in float32 on frames as training sees them."""
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 3, 12, 10, generator=g, dtype=torch.float64)
    pred = (truth + 0.1 * torch.randn(truth.shape, generator=g, dtype=torch.float64))
    pred[0, 0, :6] = truth[0, 0, :6]  # a flat exact patch: variances at the clamp
    pred[1] = 0.5  # a flat prediction: its variance 0 everywhere
    assert torch.autograd.gradcheck(lambda x: WindowedSSIM.apply(x, truth),
                                    (pred.requires_grad_(),))
    truth, pred = truth.float(), pred.detach().float()
    weights = torch.rand(3, generator=g)
    grads = []
    for ssim in (fast_ssim, windowed_ssim):
        frames = pred.clone().requires_grad_()
        (ssim(frames, truth) * weights).sum().backward()
        grads.append(frames.grad)
    torch.testing.assert_close(*grads, rtol=1e-4, atol=1e-7)


# -- the open-loop unroll and its training loss ---------------------------------------------


def make_model(seed: int = 0, **options) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(hidden_size=16, frame_shape=SHAPE, warp="flow", **options)


def make_batch(B: int = 3, L: int = 8, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"frames": torch.rand(B, L, *SHAPE, generator=g),
            "actions": torch.rand(B, L, 3, generator=g) * 2 - 1}


def test_unroll_is_the_autoregressive_rollout_with_gradients():
    model, batch = make_model(), make_batch()
    frames, actions = batch["frames"], batch["actions"][:, :-1]
    with torch.no_grad():
        # A trained-looking model: random heads, so the rollout differs from copy-last.
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    torch.testing.assert_close(unroll(model, frames, actions, context=2),
                               rollout.autoregressive(model, frames, actions, context=2))


def test_gradients_flow_through_fed_back_frames_unless_detached():
    """The last prediction's loss reaches the first step's warp through the frames fed back."""
    batch = make_batch()
    grads = {}
    for detach in (False, True):
        model = make_model()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
        predictions = unroll(model, batch["frames"], batch["actions"][:, :-1], 1, detach=detach)
        predictions[:, -1].pow(2).mean().backward()
        grads[detach] = model.warp.head.weight.grad.clone()
    assert not torch.allclose(grads[False], grads[True])


def test_uint8_feedback_feeds_back_8_bit_frames_and_passes_gradients():
    """model.feedback=uint8: every frame fed back is a clamped prediction rounded to a level
    of 1/255 (as the true frames are), the predictions differ from float feedback's, and the
    last prediction's loss still reaches the first step's warp through the rounding."""
    batch = make_batch(L=6)
    frames, actions = batch["frames"], batch["actions"][:, :-1]
    runs = {}
    for feedback, detach in (("float", False), ("uint8", False), ("uint8", True)):
        model = make_model(feedback=feedback)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
        seen = []
        model.register_forward_pre_hook(lambda module, args, seen=seen:
                                        seen.append(args[0].detach()))
        predictions = unroll(model, frames, actions, context=1, detach=detach)
        predictions[:, -1].pow(2).mean().backward()
        runs[feedback, detach] = (predictions.detach(), torch.cat(seen[1:], dim=1),
                                  model.warp.head.weight.grad)
    (float_pred, float_fed, _), (pred, fed, grad) = runs["float", False], runs["uint8", False]
    levels = fed * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    torch.testing.assert_close(fed, (pred[:, :-1].clamp(0, 1) * 255).round() / 255)
    assert not torch.equal(float_fed * 255, (float_fed * 255).round())  # float: not levels
    assert not torch.allclose(pred, float_pred)
    assert not torch.allclose(grad, runs["uint8", True][2])  # through the fed-back frames
    with pytest.raises(UserError, match="model.feedback"):
        make_model(feedback="int4")


def test_unroll_tells_a_counting_model_how_long_it_has_fed_on_itself():
    """own_steps is 0 for true frames and 1, 2, ... for the model's own predictions after
    them: the rollout equals one made by hand with those counts, and differs from the same
    model told 0 throughout."""
    model, batch = make_model(own_steps_input=True), make_batch(L=6)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
        frames, actions = batch["frames"], batch["actions"][:, :-1]
        got = unroll(model, frames, actions, context=2)
        by_hand, state = model(frames[:, :2], actions[:, :2])
        predictions, blind = [by_hand], [by_hand]
        blind_state = state
        for t in range(2, 5):
            frame = predictions[-1][:, -1:].clamp(0, 1)
            step, state = model(frame, actions[:, t : t + 1], state, own_steps=t - 1)
            predictions.append(step)
            frame = blind[-1][:, -1:].clamp(0, 1)
            step, blind_state = model(frame, actions[:, t : t + 1], blind_state)
            blind.append(step)
    torch.testing.assert_close(got, torch.cat(predictions, dim=1))
    assert not torch.allclose(got, torch.cat(blind, dim=1))


def test_keep_gate_starts_near_copy_last_and_needs_a_carried_frame():
    model, batch = make_model(gate=True), make_batch()
    with torch.no_grad():
        next_frames, _ = model(batch["frames"], batch["actions"])
    torch.testing.assert_close(next_frames, 0.99 * batch["frames"], rtol=0, atol=1e-3)
    with pytest.raises(UserError, match="model.gate"):
        WorldModel(hidden_size=16, frame_shape=SHAPE, gate=True)


@pytest.mark.parametrize("open_loop,key", [
    ({"horizon": -1}, "train.open_loop.horizon"),
    ({"horizon": 5, "ramp": 2.0}, "train.open_loop.ramp"),
    ({"horizon": 5, "warmup": -0.1}, "train.open_loop.warmup"),
    ({"horizon": 5, "warmup_window": 1}, "train.open_loop.warmup_window"),
    ({"horizon": 5, "tf_weight": -1.0}, "train.open_loop.tf_weight"),
    ({"horizon": 5, "context": 0}, "train.open_loop.context"),
    ({"horizon": 5, "speed": 1}, "train.open_loop.speed"),
])
def test_bad_open_loop_settings_name_the_key(open_loop, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        make_model(open_loop=open_loop)


def test_ssim_weight_adds_the_ssim_term_and_refuses_negatives():
    batch = make_batch()
    pred, truth = batch["frames"][:, 1:], batch["frames"][:, :-1]
    plain, with_ssim = make_model().objective(pred, truth), make_model(
        ssim_weight=0.5).objective(pred, truth)
    ssim = fast_ssim(pred[:, 0::4].flatten(0, 1), truth[:, 0::4].flatten(0, 1)).mean()
    torch.testing.assert_close(with_ssim, plain + 0.5 * (1 - ssim))
    with pytest.raises(UserError, match="model.ssim_weight"):
        make_model(ssim_weight=-1.0)


def test_open_loop_needs_scheduled_sampling_off():
    with pytest.raises(UserError, match="train.open_loop.horizon"):
        make_model(open_loop={"horizon": 4}, scheduled_sampling={
            "schedule": "linear", "start": 1.0, "end": 0.0, "decay_steps": 10})


# -- real training runs -----------------------------------------------------------------------


def test_open_loop_training_grows_the_horizon(tiny_data, tmp_path):
    """A real training run (the real train.yaml, in this process)."""
    from world_models.training import train

    run_dir = tmp_path / "run"
    cfg = compose_config(
        "train", "data=tiny", f"data.dir={tiny_data}", "data.collect=false",
        f"paths.output_dir={run_dir}", "model.hidden_size=16", "model.gate=true",
        "model.fade=true", "train.scheduled_sampling.schedule=none", "train.open_loop.horizon=10",
        "train.open_loop.warmup=0.25", "train.open_loop.warmup_window=4",
        "train.open_loop.ramp=0.25", "data.train_seq_len=12", "data.train_stride=2",
        "trainer.max_epochs=2", "trainer.log_every_n_steps=1")
    results = train(cfg)
    model = WorldModel.load_from_checkpoint(results["checkpoint"], map_location="cpu")
    assert model.hparams.open_loop["horizon"] == 10 and model.hparams.gate
    # The fade's frame started as the training split's mean frame (not black) and moved little
    (datamodule := CarRacingDataModule.from_config(cfg)).setup()
    mean_frame = datamodule.mean_frame()
    assert mean_frame.mean() > 0.3 and (model.fade.frame.detach() - mean_frame).abs().mean() < 0.05
    with open(run_dir / "csv" / "metrics.csv") as f:
        horizons = [float(r["train/open_loop_horizon"]) for r in csv.DictReader(f)
                    if r.get("train/open_loop_horizon")]
    # Teacher forcing over the first quarter of the run, then from 1 to the full horizon over
    # the next quarter, then it stays there.
    steps = len(horizons)  # one logged value per optimizer step
    assert horizons[: steps // 4] == [0] * (steps // 4) and horizons[steps // 4] == 1
    assert 1 < horizons[3 * steps // 8] < 10
    assert horizons[steps // 2 :] == [10] * (steps - steps // 2)
    assert horizons == sorted(horizons)


def test_resume_equals_an_uninterrupted_open_loop_run(run_cli, tiny_data, tmp_path):
    """The curriculum reads the global step and the run's total steps: a run killed as its
    second epoch starts, resumed from its last.ckpt into a new directory, must end where an
    uninterrupted one does. The killed run is a process; the others run in this one."""
    words = ["data=tiny", f"data.dir={tiny_data}", "data.collect=false", "model.hidden_size=16",
             "model.gate=true", "model.encoder=pooled", "train.scheduled_sampling.schedule=none",
             "train.open_loop.horizon=8", "train.open_loop.ramp=0.6", "data.train_seq_len=10",
             "data.train_stride=5", "train.input_noise=0.02", "callbacks.rollout.every_n_epochs=0"]

    words.append("trainer.max_epochs=2")
    proc = run_cli("train.py", *words, f"hydra.run.dir={tmp_path / 'killed'}",
                   "+callbacks.crash._target_=tests.helpers.CrashAtEpoch",
                   "+callbacks.crash.epoch=1")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert not (tmp_path / "killed" / "results.json").exists()
    whole = train_here(tmp_path / "whole", *words)
    resumed = train_here(tmp_path / "resumed", *words,
                         f"ckpt_path={tmp_path / 'killed' / 'checkpoints' / 'last.ckpt'}")
    assert resumed["optimizer_steps"] == whole["optimizer_steps"]
    assert resumed["test_mse"] == pytest.approx(whole["test_mse"], rel=1e-6)
    assert resumed["last_val_mse"] == pytest.approx(whole["last_val_mse"], rel=1e-6)
    assert whole["best_val_mse"] is None  # open-loop training tests its last epoch
