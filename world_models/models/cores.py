"""Sequence cores behind one contract: two LSTMs, a GRU and a causal transformer.

Every core is built as ``core = build_core(name, input_size=I, hidden_size=H)`` and called as::

    y, state = core(x, state=None)  # x [B, T, I] -> y [B, T, H]

Calling it on a window in one go, or on its halves passing ``state`` along, gives the same y.
The LSTMs also come in two parts, ``core.recur(core.input_gates(x), state)``: the input
projection of every step, then the loop.
The state is a tuple of tensors whose meaning belongs to the core: callers only pass it back,
or detach each tensor. LSTMs: (h, c), each [1, B, H]; GRU: (h,); transformer: (past,), the
projected inputs of the last max_context - 1 steps [B, P, H].

The two LSTMs (``builtin``, ``scratch``) have the semantics of a one-layer
``nn.LSTM(batch_first=True)`` and the same parameter names, shapes, gate order (i, f, g, o) and
initialisation, so a state dict saved from one loads (strictly) into the other and gives the
same outputs. Cores know nothing of Lightning: they are plain ``nn.Module``s.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


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

    # The same function in two parts, as ScratchLSTM computes it (the same parameters):
    # scheduled sampling (models/scheduled.py) reuses the input part of a pass without
    # gradients in the pass with them.
    def input_gates(self, x: Tensor) -> Tensor:
        return ScratchLSTM.input_gates(self, x)

    def input_affine(self) -> tuple[Tensor, Tensor]:
        return ScratchLSTM.input_affine(self)

    def recur(self, x_gates: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return ScratchLSTM.recur(self, x_gates, state)


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
        return self.recur(self.input_gates(x), state)

    def input_gates(self, x: Tensor) -> Tensor:
        """The input part of the gates of every time step at once (one matmul, both biases
        folded in): x [B, T, I] -> [B, T, 4H]. It does not depend on h."""
        weight, bias = self.input_affine()
        return x @ weight.T + bias

    def input_affine(self) -> tuple[Tensor, Tensor]:
        """input_gates' weight [4H, I] and bias [4H]."""
        return self.weight_ih_l0, self.bias_ih_l0 + self.bias_hh_l0

    def recur(self, x_gates: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """The loop over x_gates [B, T, 4H]: the small hidden matmul and the element-wise gate
        math of each step."""
        B, T, _ = x_gates.shape
        H = self.hidden_size
        if state is None:
            h = x_gates.new_zeros(B, H)  # [B, H]
            c = x_gates.new_zeros(B, H)  # [B, H]
        else:
            h, c = state[0][0], state[1][0]  # [1, B, H] -> [B, H]
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


class GRU(nn.GRU):
    """PyTorch's ``nn.GRU`` (one layer, batch first); its state is the tuple (h,), h [1, B, H]."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size, num_layers=1, batch_first=True)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        y, h = super().forward(x, None if state is None else state[0])
        return y, (h,)


class CausalTransformer(nn.Module):
    """A small decoder-only transformer: step t attends to steps t - max_context + 1 .. t.

    Inputs are projected to hidden_size, given a learned embedding of their position in the
    context and run through pre-norm layers under a causal mask. The state is the projected
    inputs of the last max_context - 1 steps, so a step-by-step rollout recomputes attention
    over its sliding context (no key/value cache: positions shift as the context slides).
    Positions count from the oldest step in the context, so while a window fits in max_context
    one call equals calling step by step with the state; past it, every step sees its own last
    max_context steps either way.
    """

    def __init__(self, input_size: int, hidden_size: int, max_context: int = 32,
                 num_layers: int = 2, num_heads: int = 4) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.max_context = input_size, hidden_size, max_context
        self.input_proj = nn.Linear(input_size, hidden_size)
        self.position = nn.Embedding(max_context, hidden_size)
        # No dropout: windows are short and the data small; it would also make one call and a
        # step-by-step rollout differ in training mode.
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, 4 * hidden_size, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(hidden_size),
                                            enable_nested_tensor=False)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        inputs = self.input_proj(x)  # [B, T, H]
        past = inputs[:, :0] if state is None else state[0]  # [B, P, H]
        context = torch.cat([past, inputs], dim=1)  # [B, P + T, H]
        P, T, C = past.shape[1], x.shape[1], self.max_context
        if P + T <= C:
            y = self._attend(context)[:, P:]  # [B, T, H]
        else:  # each step over its own sliding context
            y = torch.cat([self._attend(context[:, max(0, t - C + 1) : t + 1])[:, -1:]
                           for t in range(P, P + T)], dim=1)  # [B, T, H]
        return y, (context[:, -(C - 1) :] if C > 1 else context[:, :0],)

    def _attend(self, context: Tensor) -> Tensor:
        """Causal self-attention over a context of at most max_context steps [B, N, H]."""
        N = context.shape[1]
        hidden = context + self.position.weight[:N]  # [B, N, H]
        mask = nn.Transformer.generate_square_subsequent_mask(N, device=context.device,
                                                              dtype=context.dtype)
        return self.layers(hidden, mask=mask, is_causal=True)  # [B, N, H]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, max_context={self.max_context}"


CORES: dict[str, type[nn.Module]] = {
    "builtin": BuiltinLSTM, "scratch": ScratchLSTM, "gru": GRU, "transformer": CausalTransformer,
}


def build_core(name: str, input_size: int, hidden_size: int) -> nn.Module:
    """The core called ``name`` (a key of :data:`CORES`); ValueError names the choices."""
    if name not in CORES:
        available = ", ".join(sorted(CORES))
        raise ValueError(f"model.core: unknown core '{name}'; available: {available}")
    return CORES[name](input_size, hidden_size)
