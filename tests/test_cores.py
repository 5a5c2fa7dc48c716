"""The core contract, for every core; and ScratchLSTM behaves exactly like a one-layer nn.LSTM.

The transformer's own properties (causality, its sliding context) are in test_model_options.py.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from world_models.models import cores
from world_models.models.cores import (
    CORES,
    GRU,
    BuiltinLSTM,
    CausalTransformer,
    ScratchLSTM,
    build_core,
)

SHAPES = [
    (1, 1, 3, 2),
    (4, 7, 5, 8),
    (3, 12, 20, 16),
]  # (B, T, D, H): batch, time, input size, hidden size
LSTM_PARAMS = {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}
TOL = {"rtol": 1.3e-6, "atol": 1e-5}
LSTM_CORES = ["builtin", "scratch"]


def _reference(input_size: int, hidden_size: int) -> nn.LSTM:
    return nn.LSTM(input_size, hidden_size, num_layers=1, batch_first=True)


def _same_weight_trio(D: int, H: int) -> list[nn.Module]:
    """A raw nn.LSTM, a BuiltinLSTM and a ScratchLSTM, all with the raw LSTM's weights."""
    torch.manual_seed(0)
    ref = _reference(D, H)
    builtin, scratch = BuiltinLSTM(D, H), ScratchLSTM(D, H)
    builtin.load_state_dict(ref.state_dict(), strict=True)
    scratch.load_state_dict(ref.state_dict(), strict=True)
    return [ref, builtin, scratch]


@pytest.mark.parametrize("name", LSTM_CORES)
def test_parameter_names_and_shapes_match_nn_lstm(name: str) -> None:
    core, ref = build_core(name, 5, 8), _reference(5, 8)
    shapes = {k: tuple(v.shape) for k, v in core.state_dict().items()}
    assert set(shapes) == LSTM_PARAMS
    assert shapes == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k for k, _ in core.named_parameters()} == LSTM_PARAMS


def test_scratch_initialisation_is_nn_lstm_uniform() -> None:
    H = 16
    core = ScratchLSTM(40, H)
    bound = 1.0 / H**0.5
    for p in core.parameters():
        assert p.abs().max() <= bound
        assert p.std() > 0.4 * bound  # actually spread over the interval, not e.g. zeros


@pytest.mark.parametrize(("src", "dst"), [("builtin", "scratch"), ("scratch", "builtin")])
def test_state_dict_loads_strictly_into_the_other_core(src: str, dst: str) -> None:
    a, b = build_core(src, 5, 8), build_core(dst, 5, 8)
    b.load_state_dict(a.state_dict(), strict=True)
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, rtol=0, atol=0)


@pytest.mark.parametrize("with_state", [False, True], ids=["state=None", "given-state"])
@pytest.mark.parametrize(("B", "T", "D", "H"), SHAPES)
def test_outputs_and_gradients_match_nn_lstm(
    B: int, T: int, D: int, H: int, with_state: bool
) -> None:
    modules = _same_weight_trio(D, H)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, D, generator=g)
    h0, c0 = torch.randn(1, B, H, generator=g), torch.randn(1, B, H, generator=g)
    wy = torch.randn(B, T, H, generator=g)
    wh, wc = torch.randn(1, B, H, generator=g), torch.randn(1, B, H, generator=g)

    results = []
    for m in modules:
        xi = x.clone().requires_grad_()
        state = (h0.clone().requires_grad_(), c0.clone().requires_grad_()) if with_state else None
        y, (h, c) = m(xi, state) if with_state else m(xi)
        assert y.shape == (B, T, H) and h.shape == (1, B, H) and c.shape == (1, B, H)
        ((y * wy).sum() + (h * wh).sum() + (c * wc).sum()).backward()
        grads = {k: p.grad for k, p in m.named_parameters()}
        grads["x"] = xi.grad
        if with_state:
            grads["h0"], grads["c0"] = state[0].grad, state[1].grad
        results.append(((y, h, c), grads))

    (ref_out, ref_grads) = results[0]
    for out, grads in results[1:]:
        for got, want in zip(out, ref_out, strict=True):
            torch.testing.assert_close(got, want, **TOL)
        assert grads.keys() == ref_grads.keys()
        for k in ref_grads:
            assert grads[k] is not None, k
            torch.testing.assert_close(
                grads[k], ref_grads[k], **TOL, msg=lambda m, k=k: f"{k}: {m}"
            )


@pytest.mark.parametrize("name", sorted(CORES))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_passing_state_between_halves_equals_one_call(name: str, train: bool) -> None:
    torch.manual_seed(0)
    core = build_core(name, 6, 12).train(train)
    x = torch.randn(3, 9, 6)
    with torch.no_grad():
        y_full, state_full = core(x)
        y1, state = core(x[:, :4])
        y2, state2 = core(x[:, 4:], state)
    assert y_full.shape == (3, 9, 12)
    assert isinstance(state_full, tuple) and all(isinstance(s, torch.Tensor) for s in state_full)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y_full, **TOL)
    assert len(state2) == len(state_full)
    for got, want in zip(state2, state_full, strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("name", sorted(CORES))
def test_core_learns_a_fixed_sequence(name: str) -> None:
    torch.manual_seed(0)
    B, T, D, H = 4, 8, 5, 16
    core, head = build_core(name, D, H), nn.Linear(H, 3)  # H: a multiple of the 4 heads
    x, target = torch.randn(B, T, D), torch.randn(B, T, 3)
    opt = torch.optim.Adam([*core.parameters(), *head.parameters()], lr=3e-2)
    losses = []
    for _ in range(60):
        loss = nn.functional.mse_loss(head(core(x)[0]), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_build_core_returns_the_named_class() -> None:
    assert CORES == {"builtin": BuiltinLSTM, "scratch": ScratchLSTM, "gru": GRU,
                     "transformer": CausalTransformer}
    for name, cls in CORES.items():
        core = build_core(name, 3, 8)
        assert type(core) is cls
        assert (core.input_size, core.hidden_size) == (3, 8)


def test_build_core_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match="model.core") as err:
        build_core("rnn", 3, 4)
    assert str(err.value) == (
        "model.core: unknown core 'rnn'; available: builtin, gru, scratch, transformer")


def test_scratch_lstm_does_not_call_fused_lstm_ops() -> None:
    source = inspect.getsource(cores.ScratchLSTM)
    for forbidden in ("nn.LSTM", "LSTMCell", "_VF"):
        assert forbidden not in source, forbidden
