"""model.still: one learned number per frame scales the model's whole change to its input, so a
scene where nothing moves can be passed on exactly instead of creeping."""

import pytest
import torch

from world_models.models.sampling import unroll
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
        model.still.head.bias.fill_(-40.0)
    rolled = unroll(model, frames, actions, context=1)  # [B, 39, 3, H, W]
    torch.testing.assert_close(rolled, frames[:, :1].expand_as(rolled), rtol=0, atol=1e-6)
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


@pytest.mark.parametrize("fade", [True, False])
def test_the_still_gate_learns_at_the_fade_rate(fade):
    model = make_model(still=True, fade=fade, lr=1e-3, fade_lr_scale=30.0)
    groups = model.configure_optimizers().param_groups
    fast = {id(p) for p in groups[1]["params"]}
    assert [group["lr"] for group in groups] == pytest.approx([1e-3, 3e-2])
    assert {id(p) for p in model.still.parameters()} <= fast
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))
