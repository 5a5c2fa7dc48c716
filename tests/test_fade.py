"""model.fade: the prediction fades to a learned frame as the model feeds on its own pictures."""

import pytest
import torch

from world_models.errors import UserError
from world_models.models.sampling import unroll
from world_models.models.world_model import WorldModel

SHAPE = (3, 8, 8)


def make_model(**options) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(hidden_size=16, frame_shape=SHAPE, warp="flow", fade=True, **options)


def batch(B=2, L=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, L, *SHAPE, generator=g), torch.rand(B, L - 1, 3, generator=g)


def test_a_fresh_fade_trusts_the_picture_at_every_step():
    """Trust starts at sigmoid(4.6) everywhere and the clock at zero, so the prediction is
    0.99 x the unfaded picture + 0.01 x the frame, however long the model has fed on itself."""
    model = make_model()
    with torch.no_grad():
        model.fade.frame.fill_(0.5)
    frames, actions = batch()
    plain = make_model()
    plain.fade = None
    for own in (0, 1, 40):
        got, _ = model(frames[:, :1], actions[:, :1], own_steps=own)
        picture, _ = plain(frames[:, :1], actions[:, :1], own_steps=own)
        trust = torch.sigmoid(torch.tensor(4.6))
        torch.testing.assert_close(got, trust * picture + (1 - trust) * 0.5)


def test_the_clock_learns_only_from_open_loop_steps():
    """On true frames the own-steps features are zero, so teacher forcing gives the clock no
    gradient; an open-loop unroll does."""
    model, (frames, actions) = make_model(), batch()
    predicted, _ = model(frames[:, :-1], actions)
    ((predicted - frames[:, 1:]) ** 2).mean().backward()
    assert model.fade.clock.weight.grad.abs().max() == 0
    model.zero_grad()
    rolled = unroll(model, frames, actions, context=1)
    ((rolled - frames[:, 1:]) ** 2).mean().backward()
    assert model.fade.clock.weight.grad.abs().max() > 0


def test_a_clock_that_distrusts_old_pictures_fades_the_rollout_to_the_frame():
    model, (frames, actions) = make_model(), batch(L=12)
    with torch.no_grad():
        model.fade.frame.fill_(0.25)
        model.fade.clock.weight[:, 1] = -40.0  # log1p(own steps) / 5 grows along the rollout
    rolled = unroll(model, frames, actions, context=1)
    distance = (rolled - 0.25).abs().mean(dim=(0, 2, 3, 4))  # [T]
    assert distance[0] > 0.1  # from the true frame: trusted
    assert distance[-1] < 0.01  # after 10 own steps: the frame
    assert torch.all(distance[2:] <= distance[1:-1] + 1e-6)


def test_the_fade_learns_at_its_own_rate():
    optimizer = make_model(lr=1e-3, fade_lr_scale=30.0).configure_optimizers()
    rates = sorted(group["lr"] for group in optimizer.param_groups)
    assert rates == pytest.approx([1e-3, 3e-2])
    with pytest.raises(UserError, match="model.fade_lr_scale: expected > 0"):
        make_model(fade_lr_scale=0.0)


def test_a_mean_fade_frame_stays_where_training_starts_it():
    frames, actions = batch()
    for fade_frame, moves in (("learned", True), ("mean", False)):
        model = make_model(lr=1e-2, fade_frame=fade_frame, fade_lr_scale=30.0)
        with torch.no_grad():
            model.fade.frame.fill_(0.5)
            model.fade.head.bias.fill_(0.0)  # trust 0.5: the frame gets gradients
        optimizer = model.configure_optimizers()
        before = model.fade.frame.detach().clone()
        for _ in range(3):
            optimizer.zero_grad()
            predictions, _ = unroll(model, frames, actions, context=1)
            ((predictions - frames[:, 1:]) ** 2).mean().backward()
            optimizer.step()
        assert (not torch.equal(model.fade.frame, before)) == moves, fade_frame
    with pytest.raises(UserError, match="model.fade_frame: expected one of learned, mean"):
        make_model(fade_frame="average")


def test_the_fade_records_the_trust_of_own_prediction_steps_only():
    """fade.recording collects the trust of the steps fed the model's own predictions: none
    under teacher forcing, one [B, H*W] block per own step of an unroll."""
    model, (frames, actions) = make_model(), batch(L=6)
    with model.fade.recording() as trust:
        model(frames[:, :-1], actions)
    assert torch.cat(trust).shape == (0, SHAPE[1] * SHAPE[2])
    with model.fade.recording() as trust:
        unroll(model, frames, actions, context=2)
    own = torch.cat(trust)
    assert own.shape == (2 * 3, SHAPE[1] * SHAPE[2])  # steps 3..5 feed on predictions
    torch.testing.assert_close(own, torch.full_like(own, torch.sigmoid(torch.tensor(4.6)).item()))
    assert model.fade._trust is None  # recording ends with the block


def open_loop_step_loss(penalty: float):
    """The training loss of one window of a model trained open loop, and its fade's head grad."""
    torch.manual_seed(0)
    model = WorldModel(hidden_size=16, frame_shape=SHAPE, warp="flow", fade=True,
                       own_steps_input=True, fade_penalty=penalty,
                       open_loop={"horizon": 4, "context": 1, "warmup": 0.0})
    frames, actions = batch(L=6)
    loss = model.training_step({"frames": frames, "actions": torch.cat(
        [actions, actions[:, -1:]], dim=1)}, 0)
    loss.backward()
    return loss.detach(), model.fade.head.bias.grad.clone()


@pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")  # no Trainer here
def test_the_fade_penalty_charges_the_mean_trust_of_own_steps():
    """model.fade_penalty adds penalty x the mean trust over the own-prediction steps to the
    loss (a fresh fade trusts 0.99), and its gradient pushes every pixel's trust down."""
    plain, plain_grad = open_loop_step_loss(0.0)
    charged, charged_grad = open_loop_step_loss(0.5)
    trust = torch.sigmoid(torch.tensor(4.6))
    torch.testing.assert_close(charged, plain + 0.5 * trust)
    assert (charged_grad > plain_grad).all()  # descent lowers the trust's logits


@pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")  # no Trainer here
def test_a_negative_fade_penalty_is_refused_and_without_the_fade_it_charges_nothing():
    with pytest.raises(UserError, match="^model.fade_penalty: expected >= 0"):
        make_model(fade_penalty=-0.1)
    # the default model sets a penalty; turning its fade off must not need a second override
    torch.manual_seed(0)
    model = WorldModel(hidden_size=16, frame_shape=SHAPE, warp="flow", fade_penalty=0.1,
                       open_loop={"horizon": 4, "context": 1, "warmup": 0.0})
    frames, actions = batch(L=6)
    loss = model.training_step({"frames": frames, "actions": torch.cat(
        [actions, actions[:, -1:]], dim=1)}, 0)
    assert torch.isfinite(loss)
