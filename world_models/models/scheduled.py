"""Scheduled sampling's rollout (Bengio et al. 2015) at nearly the cost of teacher forcing.

Per sequence and step the model sees the true frame (probability ``prob``) or its own
prediction of it, detached: a fed-back frame is an input the model must cope with, not a path
for gradients. So the computation graph is that of ONE teacher-forced call whose inputs are
the mixed frames, and ``scheduled_rollout`` computes it in two passes:

1. without gradients, the model steps through the window only as far as it must to paint the
   frames that are fed back (one call over each stretch where every sequence sees true frames);
2. with gradients, one batched call over the whole window on the mixed inputs.

An LSTM core's input projection (most of a flat model's arithmetic) is computed once: pass 1
records it and pass 2 reuses it, with its gradients (``KnownAffine``). The draws are those of
``stepwise_scheduled_rollout``, the step-by-step version this replaced, in the same order; the
loss and gradients are its own up to the order of float sums (tests/test_scheduled_sampling).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from world_models.models.latent import RecordedNoise, not_recording
from world_models.models.sampling import fed_back, latent_step


def scheduled_rollout(model: nn.Module, frames: Tensor, actions: Tensor, prob: float,
                      generator: torch.Generator | None = None, draw: str = "sequence",
                      **latent) -> Tensor:
    """Predict frames 1..T of frames [B, T+1, 3, H, W] under actions [B, T, A] with ``model``,
    a WorldModel (pass 1 calls its two halves, ``advance`` and ``paint``).

    Frame 0 is always the true one; from step 1 on each sequence draws (from ``generator``, on
    the CPU, one torch.rand(B) per step) whether to see the true frame t (probability ``prob``)
    or its own prediction of it, as sampling.fed_back makes it (as rollout.autoregressive); with
    ``draw="batch"`` the batch shares one draw per step (one torch.rand(1)), so pass 1 runs only
    the steps that feed back, about 1 - prob of them, and paints every sequence there. Returns
    [B, T, 3, H, W], unclamped, with gradients: through the core's state across steps, but not
    through the fed-back frames. ``latent``: targets and noise for a model with a latent, as
    for sampling.unroll; its noise is drawn in pass 1, between the steps' draws as step by
    step, and replayed in pass 2 (without a generator to draw from, step by step throughout).
    """
    B, T = actions.shape[:2]
    has_latent = getattr(model, "latent", None) is not None
    if has_latent and latent.get("noise") is None and latent.get("targets") is not None:
        # a posterior drawn from the global generator: nothing to record it from
        return stepwise_scheduled_rollout(model, frames, actions, prob, generator, draw,
                                          **latent)
    gates = RecordedGates() if hasattr(getattr(model, "core", None), "recur") else None
    if has_latent and latent.get("noise") is not None:  # it draws between the steps' draws
        use_true, fed_back, latent = _fed_back_with_latent(model, frames, actions, prob,
                                                           generator, draw, latent, gates)
    else:
        use_true = torch.stack([torch.ones(B, dtype=torch.bool)] +
                               [sees_true(B, prob, generator, draw) for _ in range(1, T)],
                               dim=1)  # [B, T], as many draws as step by step, in that order
        fed_back = _fed_back_frames(model, frames, actions, use_true, latent, gates)
    inputs = fed_back  # [B, T, 3, H, W]: the true frames where use_true, detached
    if frames.requires_grad:  # the true frames' gradient, as step by step
        inputs = torch.where(use_true.to(frames.device).view(B, T, 1, 1, 1), frames[:, :T],
                             fed_back)
    replay = {} if gates is None else {"gates": gates.replay()}
    next_frames, _ = model(inputs, actions, **replay, **latent)
    return next_frames


def _fed_back_frames(model, frames, actions, use_true, latent, gates) -> Tensor:
    """Pass 1 without a latent: the mixed inputs [B, T, 3, H, W], no gradients. The model runs
    in one call up to each step where some sequence is fed its own prediction, and paints the
    last frame of that call for those sequences alone."""
    B, T = actions.shape[:2]
    if use_true.all():  # teacher forcing: nothing to paint
        return frames[:, :T].detach()
    inputs, state, start = frames[:, :T].detach().clone(), None, 0  # [B, T, 3, H, W]
    clock = model.clock(0, actions)  # [B, T, 2] or None
    record = {} if gates is None else {"gates": gates}
    with torch.no_grad():
        for t in range(1, T):
            own = (~use_true[:, t]).nonzero()[:, 0].to(frames.device)  # [N] sequences
            if not len(own):
                continue
            features, state = model.advance(inputs[:, start:t], actions[:, start:t], state,
                                            _steps(clock, start, t), **record,
                                            **latent_step(latent, start, t))
            rows = slice(None) if len(own) == B else own
            painted = model.paint(features[rows, -1:], inputs[rows, t - 1 : t],
                                  _steps(clock, t - 1, t, rows))  # [N, 1, 3, H, W]
            inputs[rows, t] = fed_back(model, painted[:, 0])
            start = t
    return inputs


def _steps(clock: Tensor | None, start: int, stop: int, rows=slice(None)) -> Tensor | None:
    return None if clock is None else clock[rows, start:stop]


def sees_true(B: int, prob: float, generator: torch.Generator | None, draw: str) -> Tensor:
    """One step's draw: which of B sequences see the true frame [B] (bool, on the CPU). Each
    its own (``draw="sequence"``, torch.rand(B)) or one for the batch (``"batch"``, rand(1))."""
    if draw == "batch":
        return (torch.rand(1, generator=generator) < prob).expand(B)
    return torch.rand(B, generator=generator) < prob


def _fed_back_with_latent(model, frames, actions, prob, generator, draw, latent, gates):
    """Pass 1 of a model with a latent, step by step as stepwise_scheduled_rollout draws: a
    step's mask, then its latent noise, from the same generator. The noise is recorded and
    returned in ``latent`` for pass 2 to replay, so that both passes draw the same z."""
    B, T = actions.shape[:2]
    noise = RecordedNoise(latent["noise"])
    record = {} if gates is None else {"gates": gates}
    masks, frames_in, state = [torch.ones(B, dtype=torch.bool)], [frames[:, :1]], None
    next_frame = None  # [B, 1, 3, H, W]
    with torch.no_grad(), not_recording(model.latent):
        for t in range(T):
            if t > 0:
                masks.append(sees_true(B, prob, generator, draw))
                frames_in.append(torch.where(masks[-1].to(frames.device).view(B, 1, 1, 1, 1),
                                             frames[:, t : t + 1], fed_back(model, next_frame)))
            next_frame, state = model(frames_in[-1], actions[:, t : t + 1], state, **record,
                                      **latent_step({**latent, "noise": noise}, t, t + 1))
    replay = {**latent, "noise": noise.replay()}
    return torch.stack(masks, dim=1), torch.cat(frames_in, dim=1), replay


class RecordedGates:
    """Pass 1's LSTM input gates, call by call: ``run`` stands in for ``core(x, state)``."""

    def __init__(self) -> None:
        self.chunks: list[Tensor] = []  # [B, t, 4H] each, in time order
        self.packed: PackedAffine | None = None

    def run(self, core: nn.Module, x: Tensor, state):
        if self.packed is None:  # the weights of this step, packed once for its pass 1
            self.packed = PackedAffine(*core.input_affine(), rows=x.shape[0])
        self.chunks.append(self.packed(x))
        return core.recur(self.chunks[-1], state)

    def replay(self) -> ReplayedGates:
        return ReplayedGates(torch.cat(self.chunks, dim=1) if self.chunks else None)


class PackedAffine:
    """x @ weight.T + bias without gradients, as pass 1 computes its input gates: step by step,
    a few rows at a time. On the CPU in float32 the weight is packed once into oneDNN's layout
    for a product of `rows` rows: measured here for 16 rows of the flat model's [512 x 3,075]
    weight, 0.46 ms a product against 0.73 ms (packing it costs 0.42 ms, once for a pass of 8
    steps). Elsewhere (a GPU, autocast, a torch without oneDNN) the plain product."""

    def __init__(self, weight: Tensor, bias: Tensor, rows: int) -> None:
        self.weight, self.bias = weight.detach(), bias.detach()
        self.packed = None
        if (weight.device.type == "cpu" and weight.dtype == torch.float32
                and torch.backends.mkldnn.is_available()
                and not torch.is_autocast_enabled("cpu")):
            try:  # a private op: a torch that has changed it takes the plain product
                self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, rows)
            except (AttributeError, RuntimeError):
                pass

    def __call__(self, x: Tensor) -> Tensor:  # x [..., I] -> [..., out]
        if self.packed is None or x.dtype != torch.float32:
            return x @ self.weight.T + self.bias
        flat = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), self.packed,
                                                  self.bias, "none", [], "")
        return flat.reshape(*x.shape[:-1], flat.shape[-1])


class ReplayedGates:
    """Pass 2: the recorded input gates of the first steps and those of the steps after them,
    made differentiable as one affine map (one weight-gradient product, not one a part)."""

    def __init__(self, x_gates: Tensor | None) -> None:
        self.x_gates = x_gates  # [B, K, 4H] or None

    def run(self, core: nn.Module, x: Tensor, state):  # x [B, T, I], K <= T
        known = 0 if self.x_gates is None else self.x_gates.shape[1]
        value = self.x_gates
        if known < x.shape[1]:
            with torch.no_grad():
                rest = core.input_gates(x[:, known:])  # [B, T - K, 4H]
            value = rest if value is None else torch.cat([value, rest], dim=1)
        return core.recur(KnownAffine.apply(x, *core.input_affine(), value), state)


class KnownAffine(torch.autograd.Function):
    """x @ weight.T + bias, whose value was already computed (without gradients): forward
    returns it, backward is the affine map's."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, value: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return value

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        flat_grad = grad.flatten(0, -2)  # [N, out]
        grad_weight = flat_grad.T @ x.flatten(0, -2) if ctx.needs_input_grad[1] else None
        grad_bias = flat_grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None


def stepwise_scheduled_rollout(model: nn.Module, frames: Tensor, actions: Tensor, prob: float,
                               generator: torch.Generator | None = None, draw: str = "sequence",
                               **latent) -> Tensor:
    """scheduled_rollout as it was first written, one step at a time with gradients: the
    reference its two passes are tested against."""
    B, T = actions.shape[:2]
    frame, state, predictions = frames[:, :1], None, []  # [B, 1, 3, H, W]
    for t in range(T):
        if t > 0:
            use_true = sees_true(B, prob, generator, draw)  # [B]
            own = fed_back(model, predictions[-1].detach())  # [B, 1, 3, H, W]
            frame = torch.where(use_true.to(frames.device).view(B, 1, 1, 1, 1),
                                frames[:, t : t + 1], own)
        next_frame, state = model(frame, actions[:, t : t + 1], state,
                                  **latent_step(latent, t, t + 1))
        predictions.append(next_frame)
    return torch.cat(predictions, dim=1)  # [B, T, 3, H, W]
