"""model.still: one learned number per frame scales the model's whole change to its input, so a
scene where nothing moves can be passed on exactly instead of creeping."""

import warnings

import lightning as L
import pytest
import torch

from world_models.data.datamodule import CarRacingDataModule
from world_models.errors import UserError
from world_models.models.sampling import unroll
from world_models.models.warps import InwardBound, StillGate
from world_models.models.world_model import WorldModel

SHAPE = (3, 8, 8)


def make_model(**options) -> WorldModel:
    torch.manual_seed(0)
    options = {"warp": "flow", "fade": True, **options}
    return WorldModel(hidden_size=16, frame_shape=SHAPE, **options)


def batch(B=2, L=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, L, *SHAPE, generator=g), torch.rand(B, L - 1, 3, generator=g)


def moving(model: WorldModel) -> WorldModel:
    """The model with a warp that moves pixels and a fade that blends in a grey frame."""
    with torch.no_grad():
        model.warp.head.bias.uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(2))
        model.fade.head.bias.fill_(0.0)
        model.fade.frame.fill_(0.5)
    return model


def test_a_fresh_still_gate_makes_99_percent_of_the_change():
    frames, actions = batch()
    gated, plain = moving(make_model(still=True)), moving(make_model())
    got, _ = gated(frames[:, :-1], actions)
    picture, _ = plain(frames[:, :-1], actions)
    moving_share = torch.sigmoid(torch.tensor(4.6))
    torch.testing.assert_close(got, frames[:, :-1] + moving_share * (picture - frames[:, :-1]))


def test_a_closed_still_gate_passes_the_first_frame_on_through_a_rollout():
    frames, actions = batch(L=40)
    model = moving(make_model(still=True))
    with torch.no_grad():
        model.still.head.bias.fill_(-40.0)  # bounded at -8: 3.4e-4 of the change a step
    rolled = unroll(model, frames, actions, context=1)  # [B, 39, 3, H, W]
    torch.testing.assert_close(rolled, frames[:, :1].expand_as(rolled), rtol=0, atol=0.01)
    open_gate = unroll(moving(make_model(still=True)), frames, actions, context=1)
    assert (open_gate[:, -1] - frames[:, 0]).abs().mean() > 0.05  # the picture moved


def test_still_frames_teach_the_gate_to_close():
    """On a scene that does not change, the loss falls as the gate closes: its gradient says so."""
    frames, actions = batch(L=10)
    still_scene = frames[:, :1].expand_as(frames).contiguous()
    model = moving(make_model(still=True))
    rolled = unroll(model, still_scene, actions[:, :9], context=1)
    ((rolled - still_scene[:, 1:]) ** 2).mean().backward()
    assert model.still.head.bias.grad.item() > 0  # gradient descent lowers it: closes


def gate_and_grad(bias: float):
    """A still gate whose logit is `bias` everywhere, between a black frame and a white
    picture, against a white target: its output and the gradient on its bias."""
    gate = StillGate(hidden_size=4)
    with torch.no_grad():
        gate.head.bias.fill_(bias)
    frames, picture = torch.zeros(1, 2, *SHAPE), torch.ones(1, 2, *SHAPE)
    out = gate(torch.randn(1, 2, 4), frames, picture)
    ((out - picture) ** 2).mean().backward()
    return out, gate.head.bias.grad.item()


def test_a_gate_pushed_far_shut_still_opens_again():
    """At a logit of -40 a plain sigmoid passes a gradient of ~1e-18: Adam cannot move it (its
    eps is 1e-8) and the model stays copy-last for good. The bounded logit passes the bound's."""
    out, grad = gate_and_grad(-40.0)
    assert out.min().item() == pytest.approx(torch.sigmoid(torch.tensor(-8.0)).item())
    assert grad < -1e-5  # gradient descent raises the logit: opens


def test_the_bound_passes_gradients_back_in_and_none_further_out():
    x = torch.tensor([-40.0, -40.0, 0.5, 40.0, 40.0], requires_grad=True)
    InwardBound.apply(x, 8.0).backward(torch.tensor([-1.0, 1.0, 1.0, -1.0, 1.0]))
    # descent moves x by -grad: index 0 and 4 back in, 1 and 3 further out
    assert x.grad.tolist() == [-1.0, 0.0, 1.0, 0.0, 1.0]


def test_within_the_bound_the_gate_is_a_plain_sigmoid_to_the_bit():
    for bias in (-5.0, 0.3, 4.6):
        out, grad = gate_and_grad(bias)
        plain = torch.sigmoid(torch.tensor(bias)).item()  # the picture - frames is 1
        assert torch.equal(out, torch.full_like(out, plain))
        assert grad == pytest.approx(2 * (plain - 1) * plain * (1 - plain), rel=1e-5)


def test_a_floor_shuts_cells_open_less_than_it_exactly_and_keeps_their_gradient():
    """model.still_floor=0.05: a cell open 0.047 (logit -3) passes its part of the frame on to
    the bit, one open 0.12 (logit -2) is the plain gate; the shut cell's logit still gets the
    sigmoid's gradient (of the loss of the shut output), so it can open again."""
    frames, actions = batch(L=4)
    floored = moving(make_model(still=True, still_grid=2, still_floor=0.05))
    plain = moving(make_model(still=True, still_grid=2))
    outputs, grads = [], []
    for model in (floored, plain):
        with torch.no_grad():
            model.still.head.bias.copy_(torch.tensor([-3.0, -2.0, -3.0, -2.0]))
        got, _ = model(frames[:, :-1], actions[:, :3])
        ((got - frames[:, 1:]) ** 2).mean().backward()
        outputs.append(got)
        grads.append(model.still.head.bias.grad)
    inputs = frames[:, :-1]
    assert torch.equal(outputs[0][..., :, :4], inputs[..., :, :4])  # left cells: shut, exact
    assert (outputs[1][..., :, :4] - inputs[..., :, :4]).abs().max() > 1e-3  # plain: creeps
    assert torch.equal(outputs[0][..., :, 4:], outputs[1][..., :, 4:])  # right cells: as plain
    torch.testing.assert_close(grads[0][1::2], grads[1][1::2])  # the open cells': as plain
    assert grads[0][::2].abs().min() > 1e-4  # the shut cells': not cut off


def test_a_floor_outside_0_to_1_is_refused():
    with pytest.raises(UserError, match=r"model.still_floor: expected 0 <= floor < 1, got 1.5"):
        make_model(still=True, still_floor=1.5)


@pytest.mark.parametrize("fade", [True, False])
def test_the_still_gate_learns_at_the_base_rate_and_the_fade_fast(fade):
    model = make_model(still=True, fade=fade, lr=1e-3, fade_lr_scale=30.0)
    groups = model.configure_optimizers().param_groups
    assert [group["lr"] for group in groups] == pytest.approx([1e-3, 3e-2] if fade else [1e-3])
    assert {id(p) for p in model.still.parameters()} <= {id(p) for p in groups[0]["params"]}
    if fade:
        assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.fade.parameters()}
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("still_lr_scale, rates", [(30.0, [1e-3, 3e-2]),
                                                   (5.0, [1e-3, 3e-2, 5e-3])])
def test_model_still_lr_scale_gives_the_gate_a_rate_of_its_own(still_lr_scale, rates):
    """30, the fade's: the two share the fast group, as the gate learned until 2026-11-29."""
    model = make_model(still=True, fade=True, lr=1e-3, fade_lr_scale=30.0,
                       still_lr_scale=still_lr_scale)
    groups = model.configure_optimizers().param_groups
    assert [group["lr"] for group in groups] == pytest.approx(rates)
    gate = {id(p) for p in model.still.parameters()}
    assert gate <= {id(p) for p in groups[-1]["params"]}
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))


def test_a_still_lr_scale_of_zero_is_refused():
    with pytest.raises(UserError, match="model.still_lr_scale: expected > 0"):
        make_model(still=True, still_lr_scale=0.0)


def test_a_still_grid_gates_each_cell_of_the_frame_apart():
    """model.still_grid=2 on 8x8 frames: four numbers, each over its 4x4 cell; a closed cell
    passes its part of the frame on, an open one makes the change there."""
    frames, actions = batch(L=4)
    model = moving(make_model(still=True, still_grid=2))
    with torch.no_grad():
        model.still.head.bias.copy_(torch.tensor([-40.0, 40.0, 40.0, -40.0]))
    picture, _ = moving(make_model())(frames[:, :-1], actions[:, :3])
    got, _ = model(frames[:, :-1], actions[:, :3])
    closed, opened = torch.sigmoid(torch.tensor(-8.0)), torch.sigmoid(torch.tensor(8.0))
    share = torch.tensor([[closed, opened], [opened, closed]]).repeat_interleave(4, 0)
    share = share.repeat_interleave(4, 1)  # [8, 8]
    inputs = frames[:, :-1]
    torch.testing.assert_close(got, inputs + share * (picture - inputs))
    assert (got[..., :4, :4] - inputs[..., :4, :4]).abs().max() < 0.01  # top left: passed on
    assert (got[..., :4, 4:] - inputs[..., :4, 4:]).abs().max() > 0.05  # top right: changed


def test_a_still_grid_that_does_not_divide_the_frame_is_refused():
    with pytest.raises(UserError, match=r"model.still_grid: expected >= 1 and dividing"):
        make_model(still=True, still_grid=3)


class ShutAtStart(L.Callback):
    """Shuts the still gate before the first step, as jerkier data did in 17 steps."""

    def on_train_start(self, trainer, model):
        with torch.no_grad():
            model.still.head.bias.fill_(-40.0)


@pytest.mark.parametrize("shut", [True, False])
def test_a_shut_still_gate_is_logged_and_said_in_one_line(tiny_data, tmp_path, shut):
    dm = CarRacingDataModule(str(tiny_data), seq_len=5, batch_size=4, split=[0.6, 0.2, 0.2],
                             collect=False)
    dm.setup("fit")
    model = WorldModel(hidden_size=8, frame_shape=dm.frame_shape, warp="flow", still=True,
                       still_grid=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=tmp_path,
                        callbacks=[ShutAtStart()] if shut else [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=dm)
    said = [str(w.message) for w in caught if "still gate has shut" in str(w.message)]
    opening = trainer.callback_metrics["val/still_open"].item()
    if shut:
        assert opening < 1e-3
        assert len(said) == 1 and "model.still_lr_scale=10" in said[0]
        assert "\n" not in said[0]
    else:
        assert opening > 0.9  # it starts at 0.99 and one tiny epoch barely moves it
        assert not said


def test_a_tracker_fed_gate_does_not_read_the_models_own_pictures():
    """model.still_reads=actions: on steps fed the model's own pictures the gate's opening
    follows from the true frames before and the actions alone; the core-fed gate's moves with
    the picture it is fed."""
    frames, actions = batch(L=6)
    for reads, same in (("actions", True), ("state", False)):
        model = make_model(still=True, still_grid=2, own_steps_input=True, still_reads=reads)
        with torch.no_grad():  # a head that reads its inputs
            model.still.head.weight.normal_(generator=torch.Generator().manual_seed(3))
        _, state = model(frames[:, :2], actions[:, :2])  # two true frames
        clock = model.clock(1, actions[:, 2:3])  # then one of its own
        openings = []
        for picture in (frames[:, 2:3], torch.rand(frames[:, 2:3].shape)):
            features, _ = model.advance(picture, actions[:, 2:3], state, clock)
            openings.append(model.still.opening(model.still_inputs(features)[1]))
        assert torch.equal(openings[0], openings[1]) == same, reads
        features, _ = model.advance(frames[:, 2:3], actions[:, 2:3].flip(0), state, clock)
        moved = model.still.opening(model.still_inputs(features)[1])
        assert not torch.equal(moved, openings[0])  # the actions always reach it


def test_a_tracker_fed_model_steps_as_it_runs_a_window():
    """The tracker's state rides in the model's state: a window in one call equals the same
    window step by step, and an unknown still_reads is refused, naming the key."""
    frames, actions = batch(L=6)
    model = make_model(still=True, still_grid=2, still_reads="actions")
    whole, state = model(frames[:, :-1], actions)
    steps, step_state = [], None
    for t in range(actions.shape[1]):
        out, step_state = model(frames[:, t : t + 1], actions[:, t : t + 1], step_state)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), whole)
    assert len(state) == 3  # the LSTM's (h, c) and the tracker's h
    with pytest.raises(UserError, match=r"model.still_reads: expected one of state, actions, "
                                        r"got 'frames'"):
        make_model(still=True, still_reads="frames")
