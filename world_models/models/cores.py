"""Recurrent cores: a one-layer LSTM, built in or written from its gate equations.

Both cores share one contract, the semantics of ``nn.LSTM(batch_first=True)`` with one layer::

    core = build_core("scratch", input_size=I, hidden_size=H)
    y, (h, c) = core(x, state=None)  # x [B, T, I] -> y [B, T, H]; h, c [1, B, H]

and the same parameter names, shapes, gate order (i, f, g, o) and initialisation, so a state
dict saved from one core loads (strictly) into the other and gives the same outputs.
Cores know nothing of Lightning: they are plain ``nn.Module``s.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

State = tuple[Tensor, Tensor]


class BuiltinLSTM(nn.LSTM):
    """PyTorch's fused ``nn.LSTM`` (one layer, batch first): the reference core.

    Subclassing keeps nn.LSTM's parameter names (``weight_ih_l0``, ...) at the top level of the
    state dict, which is what makes checkpoints interchangeable with :class:`ScratchLSTM`.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, num_layers=1, batch_first=True)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if x.device.type != "cpu":
            return super().forward(x, state)
        # On CPU nn.LSTM dispatches to oneDNN's RNN kernel, measured here 1.9x slower than
        # PyTorch's native one at the report's sizes (benchmarks/bench_train.py) and far
        # slower on a busy machine; the native kernel computes the same function.
        enabled = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = False
        try:
            return super().forward(x, state)
        finally:
            torch.backends.mkldnn.enabled = enabled


class ScratchLSTM(nn.Module):
    """A one-layer LSTM written from its gate equations, with the built-in's parameters.

    For each time step t, with input x_t [B, I] and previous state (h, c) [B, H]::

        i = sigmoid(W_xi x_t + b_xi + W_hi h + b_hi)    input gate
        f = sigmoid(W_xf x_t + b_xf + W_hf h + b_hf)    forget gate
        g = tanh   (W_xg x_t + b_xg + W_hg h + b_hg)    candidate cell
        o = sigmoid(W_xo x_t + b_xo + W_ho h + b_ho)    output gate
        c_t = f * c + i * g
        h_t = o * tanh(c_t)

    The four gates' weights are stacked in PyTorch's order (i, f, g, o) along the first
    dimension: ``weight_ih_l0`` [4H, I], ``weight_hh_l0`` [4H, H], ``bias_ih_l0`` and
    ``bias_hh_l0`` [4H].

    The input part of the gates does not depend on h, so it is computed for all time steps at
    once with ONE matmul before the loop; the loop only does the small hidden matmul and the
    element-wise gate math.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        H = hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * H, input_size))  # [4H, I]
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * H, H))  # [4H, H]
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * H))  # [4H]
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * H))  # [4H]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's LSTM initialisation: every parameter ~ U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        B, T, _ = x.shape
        H = self.hidden_size
        if state is None:
            h = x.new_zeros(B, H)  # [B, H]
            c = x.new_zeros(B, H)  # [B, H]
        else:
            h, c = state[0][0], state[1][0]  # [1, B, H] -> [B, H]

        # Input projection of every time step at once (one matmul, both biases folded in).
        x_gates = x @ self.weight_ih_l0.T + (self.bias_ih_l0 + self.bias_hh_l0)  # [B, T, 4H]
        w_hh_t = self.weight_hh_l0.T  # [H, 4H]

        outputs = []
        for t in range(T):
            gates = x_gates[:, t] + h @ w_hh_t  # [B, 4H], gate blocks ordered i, f, g, o
            i, f, g, o = gates.chunk(4, dim=1)  # each [B, H]
            i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
            g = torch.tanh(g)
            c = f * c + i * g  # [B, H]
            h = o * torch.tanh(c)  # [B, H]
            outputs.append(h)

        y = torch.stack(outputs, dim=1)  # [B, T, H]
        return y, (h.unsqueeze(0), c.unsqueeze(0))  # h, c: [1, B, H]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


CORES: dict[str, type[nn.Module]] = {"builtin": BuiltinLSTM, "scratch": ScratchLSTM}


def build_core(name: str, input_size: int, hidden_size: int) -> nn.Module:
    """The core called ``name`` (a key of :data:`CORES`); ValueError names the choices."""
    if name not in CORES:
        available = ", ".join(sorted(CORES))
        raise ValueError(f"model.core: unknown core '{name}'; available: {available}")
    return CORES[name](input_size, hidden_size)
