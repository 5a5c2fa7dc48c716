"""Scheduled sampling's two-pass rollout (sampling.scheduled_rollout) against the step-by-step
one it replaced (stepwise_scheduled_rollout): the same draws, loss and gradients on a fixed
batch and generator, for every core, a warp, a latent, and probabilities at which pass 1 skips
steps. The schedules and the rollout at p = 1 and 0: test_model_options.py."""

import pytest
import torch

from world_models.models.cores import CORES
from world_models.models.latent import mean_kl
from world_models.models.scheduled import (
    PackedAffine,
    scheduled_rollout,
    sees_true,
    stepwise_scheduled_rollout,
)
from world_models.models.world_model import WorldModel

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")  # no Trainer here
SHAPE = (3, 16, 16)
# float sums in another order: the batched call against T calls of one step; gradients to
# 1e-4 of the largest of each tensor
TOL = {"rtol": 1e-4, "atol": 1e-5}


def make_model(**options) -> WorldModel:
    torch.manual_seed(0)
    model = WorldModel(hidden_size=16, frame_shape=SHAPE, **options)
    with torch.no_grad():  # a warp model starts as copy-last; make its every part matter
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def make_batch(B: int = 5, L: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(B, L, *SHAPE, generator=g), torch.rand(B, L - 1, 3, generator=g) * 2 - 1


def loss_and_grads(rollout, model, prob, seed=0, draw="sequence"):
    """The objective (plus the KL of a latent) of one rollout, its gradients (the parameters'
    and the true frames') and the state of the generator after it."""
    frames, actions = make_batch()
    frames.requires_grad_()  # the true frames fed in pass their gradient on, the fed-back not
    generator = torch.Generator().manual_seed(seed)
    latent = ({} if model.latent is None else
              {"targets": frames[:, 1:].detach(), "noise": generator})
    model.zero_grad()
    if model.latent is None:
        predicted = rollout(model, frames, actions, prob, generator, draw, **latent)
        loss = model.objective(predicted, frames[:, 1:].detach())
    else:
        with model.latent.recording() as kl_terms:
            predicted = rollout(model, frames, actions, prob, generator, draw, **latent)
        loss = model.objective(predicted, frames[:, 1:].detach()) + mean_kl(kl_terms)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    grads["frames"] = frames.grad
    return predicted.detach(), loss.detach(), grads, generator.get_state()


@pytest.mark.parametrize(("options", "prob"), [
    ({"warp": "flow"}, 0.5),  # experiment=flow_ss's model, halfway through its schedule
    ({"warp": "flow"}, 0.0),  # the end of the schedule: open loop, no gradient through frames
    ({"warp": "flow"}, 0.9),  # some steps every sequence sees true: pass 1 skips them
    ({"warp": "flow"}, 1.0),  # teacher forcing: pass 1 runs nothing
    ({"core": "scratch", "residual": True, "l1_weight": 0.5}, 0.5),
    ({"core": "gru", "encoder": "conv"}, 0.5),
    ({"core": "transformer", "warp": "affine", "gate": True, "fill": True}, 0.5),
    ({"warp": "flow", "own_steps_input": True, "fade": True, "ssim_weight": 0.3,
      "still": True, "log_mse_weight": 1e-3, "still_grid": 2, "feedback": "uint8"}, 0.5),
    ({"warp": "flow", "latent": "gaussian", "latent_size": 4}, 0.5),  # draws between steps
    ({"latent": "gaussian", "latent_size": 4}, 1.0),
], ids=["flow", "flow-p0", "flow-p0.9", "flow-p1", "scratch", "gru-conv", "transformer",
        "fade-ssim", "latent", "latent-p1"])
def test_two_passes_equal_the_stepwise_rollout(options, prob):
    assert_two_passes_equal_stepwise(make_model(**options), prob)


@pytest.mark.parametrize("core", sorted(CORES))
def test_every_core_takes_two_passes_as_step_by_step(core):
    assert_two_passes_equal_stepwise(make_model(core=core, warp="flow"), 0.5)


@pytest.mark.parametrize(("options", "prob"), [
    ({"warp": "flow"}, 0.5), ({"warp": "flow"}, 0.0),
    ({"warp": "flow", "latent": "gaussian", "latent_size": 4}, 0.5)], ids=["flow", "flow-p0",
                                                                           "latent"])
def test_a_draw_per_batch_takes_two_passes_as_step_by_step(options, prob):
    assert_two_passes_equal_stepwise(make_model(**options), prob, draw="batch")


def test_a_draw_per_batch_feeds_all_or_none_back_and_runs_fewer_steps():
    """draw=batch: at each step every sequence sees the true frame or every one its own
    prediction (one draw per step), and pass 1 advances the core once per step that feeds
    back, not once per step where any sequence is fed back."""
    generator = torch.Generator().manual_seed(4)
    draws = [sees_true(6, 0.5, generator, "batch") for _ in range(20)]
    assert all(d.all() or not d.any() for d in draws) and len({bool(d[0]) for d in draws}) == 2

    model, (frames, actions) = make_model(warp="flow"), make_batch(B=6, L=12)
    calls = {"sequence": 0, "batch": 0}
    advance = model.advance
    for draw in calls:
        def counted(*args, draw=draw, **kwargs):
            calls[draw] += 1
            return advance(*args, **kwargs)

        model.advance = counted
        scheduled_rollout(model, frames, actions, 0.5, torch.Generator().manual_seed(4), draw)
        del model.advance
    steps = torch.Generator().manual_seed(4)
    fed_steps = sum(bool(torch.rand(1, generator=steps) >= 0.5) for _ in range(1, 11))
    assert 0 < fed_steps < 10
    assert calls["batch"] == fed_steps + 1 < calls["sequence"]  # + pass 2's one call


def assert_two_passes_equal_stepwise(model, prob, draw="sequence"):
    new = loss_and_grads(scheduled_rollout, model, prob, draw=draw)
    old = loss_and_grads(stepwise_scheduled_rollout, model, prob, draw=draw)
    torch.testing.assert_close(new[0], old[0], **TOL)
    torch.testing.assert_close(new[1], old[1], **TOL)
    assert new[2].keys() == old[2].keys() and len(old[2]) > 1
    assert any(name.startswith("core.") and grad.abs().max() > 0 for name, grad in old[2].items())
    for name, grad in old[2].items():
        torch.testing.assert_close(new[2][name], grad, rtol=1e-4,
                                   atol=1e-4 * grad.abs().max().item(), msg=name)
    assert torch.equal(new[3], old[3])  # the same draws, in the same number


def test_the_draws_decide_what_is_fed_back():
    """Another seed feeds other frames back: the equality above is not of a rollout that
    ignores its draws."""
    model = make_model(warp="flow")
    first, second = (loss_and_grads(scheduled_rollout, model, 0.5, seed) for seed in (0, 1))
    assert not torch.allclose(first[0], second[0])
    torch.testing.assert_close(loss_and_grads(scheduled_rollout, model, 0.5, 1)[0], second[0],
                               rtol=0, atol=0)


@pytest.mark.parametrize("targets", [True, False], ids=["posterior", "prior-mean"])
def test_a_latent_without_a_generator_rolls_out_as_step_by_step(targets):
    """No generator for the latent: its posterior draws from the global one (not recorded, so
    step by step), or without targets z is the prior's mean (no draws: two passes)."""
    model = make_model(latent="gaussian", latent_size=4)
    frames, actions = make_batch()
    latent = {"targets": frames[:, 1:]} if targets else {}
    outputs = []
    for rollout in (scheduled_rollout, stepwise_scheduled_rollout):
        torch.manual_seed(3)
        outputs.append(rollout(model, frames, actions, 0.5, torch.Generator().manual_seed(0),
                               **latent))
    torch.testing.assert_close(outputs[0], outputs[1], **TOL)


def test_pass_one_records_no_kl():
    """The latent's KL is the batched pass's alone: one [B, T] term with gradients."""
    model = make_model(latent="gaussian", latent_size=4)
    frames, actions = make_batch()
    generator = torch.Generator().manual_seed(0)
    with model.latent.recording() as kl_terms:
        scheduled_rollout(model, frames, actions, 0.5, generator, targets=frames[:, 1:],
                          noise=generator)
    assert [kl.shape for kl in kl_terms] == [actions.shape[:2]]
    assert kl_terms[0].requires_grad


def test_pass_one_packs_the_input_weight_to_the_same_products():
    """Pass 1's input gates from a weight packed once (oneDNN, on the CPU) equal the plain
    product, for the rows it was packed for and others; under autocast it is not packed."""
    g = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(64, 200, generator=g), torch.randn(64, generator=g)
    affine = PackedAffine(weight, bias, rows=5)
    if torch.backends.mkldnn.is_available():
        assert affine.packed is not None
    for shape in ((5, 1, 200), (5, 3, 200), (2, 200)):
        x = torch.randn(*shape, generator=g)
        torch.testing.assert_close(affine(x), x @ weight.T + bias, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert PackedAffine(weight, bias, rows=5).packed is None


@pytest.mark.slow  # compiling takes up to ~30 s of CPU here
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_compiled_model_takes_the_two_passes_as_the_eager_one():
    """Pass 1 paints a different number of sequences at each step: the compiled half must
    follow (recompiling for a dynamic batch), giving the eager model's predictions."""
    from tests.test_compile import compile_fails

    reason = compile_fails()
    if reason:
        pytest.skip(f"torch.compile cannot work here ({reason})")
    options = {"warp": "flow", "fade": True, "own_steps_input": True}
    eager, compiled = make_model(**options), make_model(**options, compile=True)
    compiled.load_state_dict(eager.state_dict())
    frames, actions = make_batch()
    for seed in range(3):
        expected, got = (scheduled_rollout(model, frames, actions, 0.5,
                                           torch.Generator().manual_seed(seed))
                         for model in (eager, compiled))
        torch.testing.assert_close(got, expected, **TOL)
