"""Decoders that move pixels rather than paint them: the next frame as the current one, warped.

Between two CarRacing frames the car stays centred while the scene shifts and turns under it,
so a warp of the current frame says most of what changes in a few numbers (as in Finn et al.
2016's transformation-based video prediction). ``model.warp`` picks one::

    warp = build_warp(name, frame_shape=(3, H, W), hidden_size=Hd)
    warped = warp(hidden, frames)  # [B, T, Hd], [B, T, 3, H, W] -> [B, T, 3, H, W]

``affine`` predicts the 6 numbers of an affine map (rotation, shift, zoom, shear); ``flow``
predicts a coarse field of pixel displacements (2 x H/4 x W/4, upsampled). Both start as the
identity, so an untrained warp model copies the last frame; the model's residual decoder then
paints what no warp explains (new track at the edges, the indicator bar). ``KeepGate``
(``model.gate``) says per pixel how much of the warped frame to keep, for rollouts that must
forget what they can no longer know.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _resample(frames: Tensor, grid: Tensor) -> Tensor:
    """frames [N, C, H, W] sampled at grid [N, H, W, 2] (x, y in [-1, 1]); edges repeat."""
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)


class AffineWarp(nn.Module):
    """A linear head from the core's state to a 2x3 affine map of output to input coordinates."""

    def __init__(self, frame_shape: tuple[int, int, int], hidden_size: int) -> None:
        super().__init__()
        self.frame_shape = tuple(frame_shape)
        self.head = nn.Linear(hidden_size, 6)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))  # the identity

    def forward(self, hidden: Tensor, frames: Tensor) -> Tensor:
        B, T = hidden.shape[:2]
        theta = self.head(hidden).reshape(B * T, 2, 3)
        flat = frames.flatten(0, 1)  # [BT, 3, H, W]
        grid = F.affine_grid(theta, list(flat.shape), align_corners=False)  # [BT, H, W, 2]
        return _resample(flat, grid).unflatten(0, (B, T))


class FlowWarp(nn.Module):
    """A linear head from the core's state to a displacement field at a quarter of the frame's
    resolution, upsampled bilinearly and added to the identity sampling grid."""

    def __init__(self, frame_shape: tuple[int, int, int], hidden_size: int) -> None:
        super().__init__()
        _, height, width = self.frame_shape = tuple(frame_shape)
        self.coarse = (max(1, height // 4), max(1, width // 4))
        self.head = nn.Linear(hidden_size, 2 * self.coarse[0] * self.coarse[1])
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # The upsampling and the identity grid's offset as one affine map of the head's output,
        # grid = identity + coarse @ spread: the bilinear upsampling (the coarse field's basis
        # vectors through F.interpolate) with the result laid out as the sampling grid's
        # [H, W, (x, y)]. One matrix product, and its backward one more, in place of an
        # interpolation, a permute and an add per call (and their backwards).
        basis = torch.eye(self.head.out_features).reshape(-1, 2, *self.coarse)
        spread = F.interpolate(basis, size=(height, width), mode="bilinear", align_corners=False)
        identity = F.affine_grid(torch.eye(2, 3)[None], [1, 1, height, width], align_corners=False)
        self.register_buffer("spread", spread.permute(0, 2, 3, 1).flatten(1).contiguous(),
                             persistent=False)  # [2 * H/4 * W/4, H * W * 2]
        self.register_buffer("identity", identity.flatten(), persistent=False)  # [H * W * 2]

    def forward(self, hidden: Tensor, frames: Tensor) -> Tensor:
        B, T = hidden.shape[:2]
        coarse = self.head(hidden).flatten(0, 1)  # [BT, 2 * H/4 * W/4]
        # in float32 even under autocast: the grid's values reach +-1, and in bfloat16 they
        # would land up to 1/8 pixel off
        with torch.autocast(hidden.device.type, enabled=False):
            grid = torch.addmm(self.identity, coarse.float(), self.spread)  # [BT, H * W * 2]
        grid = grid.view(B * T, *self.frame_shape[1:], 2)  # [BT, H, W, 2]
        return _resample(frames.flatten(0, 1), grid).unflatten(0, (B, T))


class KeepGate(nn.Module):
    """How much of the carried (warped) frame each pixel keeps, in (0, 1): a linear head from the
    core's state. It starts at 0.99 everywhere, nearly copy-last; where the model cannot know
    what comes into view it learns to forget. With ``fill``, what it forgets is replaced by a
    learned frame (the "unknown road" to expect; it starts black and learns fast, since its
    gradient is direct); without, the painted part alone says what to expect there."""

    def __init__(self, frame_shape: tuple[int, int, int], hidden_size: int,
                 fill: bool = False) -> None:
        super().__init__()
        self.frame_shape = tuple(frame_shape)
        self.head = nn.Linear(hidden_size, frame_shape[1] * frame_shape[2])
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, 4.6)  # sigmoid(4.6) = 0.99
        self.fill = nn.Parameter(torch.zeros(self.frame_shape)) if fill else None

    def forward(self, hidden: torch.Tensor, carried: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, Hd], carried [B, T, 3, H, W] -> the gated frame [B, T, 3, H, W]."""
        keep = torch.sigmoid(self.head(hidden)).unflatten(-1, (1, *self.frame_shape[1:]))
        if self.fill is None:
            return keep * carried  # keep [B, T, 1, H, W]
        return keep * carried + (1 - keep) * self.fill


class Fade(nn.Module):
    """How far the model trusts its own picture, per pixel, as it feeds on its own predictions
    (``model.fade``): trust = sigmoid(head(state) + clock(own-steps features)), and the
    prediction becomes trust * picture + (1 - trust) * a learned frame, what to expect where
    nothing is known (training starts it at the training split's mean frame). It starts trusting
    (0.99) everywhere and at every step; the clock reads only the own-steps features, which are 0
    on true frames, so it learns from open-loop training alone how fast pictures go stale.
    learn_frame=False (``model.fade_frame=mean``) keeps the frame where training starts it: the
    fade can then only weigh the picture against the mean training frame."""

    FRAMES = ("learned", "mean")

    def __init__(self, frame_shape: tuple[int, int, int], hidden_size: int, clock_inputs: int,
                 learn_frame: bool = True):
        super().__init__()
        self.frame_shape = tuple(frame_shape)
        pixels = frame_shape[1] * frame_shape[2]
        self.head = nn.Linear(hidden_size, pixels)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, 4.6)  # sigmoid(4.6) = 0.99
        self.clock = nn.Linear(clock_inputs, pixels, bias=False)
        nn.init.zeros_(self.clock.weight)
        self.frame = nn.Parameter(torch.zeros(self.frame_shape), requires_grad=learn_frame)
        self._trust = None  # see recording()

    def forward(self, hidden: Tensor, clock: Tensor, picture: Tensor) -> Tensor:
        """hidden [B, T, Hd], clock [B, T, C], picture [B, T, 3, H, W] -> the faded picture."""
        logits = self.head(hidden) + self.clock(clock)  # [B, T, H*W]
        trust = torch.sigmoid(logits)
        if self._trust is not None:  # the trust of the steps fed the model's own predictions
            own = clock[..., 0] > 0  # [B, T]; the clock's first feature: an own prediction
            self._trust.append(trust[own])  # [N, H*W]
        trust = trust.unflatten(-1, (1, *self.frame_shape[1:]))
        return trust * picture + (1 - trust) * self.frame

    @contextmanager
    def recording(self):
        """Collect the trust [N, H*W] of every own-prediction step inside the block, into a
        list (model.fade_penalty charges its mean)."""
        self._trust = []
        try:
            yield self._trust
        finally:
            self._trust = None

    @staticmethod
    def mean_trust(trust: list[Tensor]) -> Tensor | None:
        """The mean of every trust a recording collected, or None if it collected none."""
        trust = [t for t in trust if t.numel()]
        return torch.cat(trust).mean() if trust else None


class StillGate(nn.Module):
    """How much of its change the model makes to the frame it was given (``model.still``): one
    number per frame, still = sigmoid(head(state)), and the prediction becomes
    frame + still * (picture - frame). Where nothing moves (the car stands, the scene is the
    same) it can learn to pass the frame on nearly exactly, warp and fade included, instead of
    letting small flows and fades creep over a still picture; it starts at 0.99 and learns at
    model.still_lr_scale x the model's rate (30, the fade's, in model=imagine).

    grid > 1 (``model.still_grid``): one number per cell of a grid x grid partition of the
    frame instead, so that a part that changes (CarRacing's dashboard, under every action)
    need not keep the rest (a standing car's scene) changing with it."""

    def __init__(self, hidden_size: int, frame_shape: tuple[int, int, int] = (3, 32, 32),
                 grid: int = 1, floor: float = 0.0) -> None:
        super().__init__()
        self.size, self.grid, self.floor = tuple(frame_shape[1:]), grid, float(floor)
        self.head = nn.Linear(hidden_size, grid * grid)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, 4.6)  # sigmoid(4.6) = 0.99
        if grid > 1:  # which cell each pixel is in, [grid^2, H * W] of 0 and 1
            height, width = self.size
            rows = torch.arange(height) // (height // grid)
            cols = torch.arange(width) // (width // grid)
            cell = (rows[:, None] * grid + cols[None, :]).flatten()  # [H * W]
            cells = F.one_hot(cell, grid * grid).T.float().contiguous()
            self.register_buffer("cells", cells, persistent=False)

    # |logit| <= 8 (the gate within 3.4e-4 of 0 and 1), see InwardBound. Unbounded at 30x the
    # learning rate (its one logit, a head of 128 inputs, can move ~1 unit a step), it closed
    # for good in the first 17 open-loop steps on jerkier data (conf/policy/diverse.yaml, both
    # seeds): the sigmoid's gradient at a logit of -40 is 4e-18, and every change the model
    # learned was multiplied by 0, so it ended as copy-last. Within the bound, the gate
    # computes what it did without one, to the bit.
    BOUND = 8.0

    # A gate open less than this on average over the validation windows has shut: the model
    # passes its input frames on (WorldModel warns, naming model.still_lr_scale).
    SHUT = 0.01

    def opening(self, hidden: Tensor) -> Tensor:
        """hidden [B, T, Hd] -> how much of its change the model makes, [B, T, grid^2]."""
        moving = torch.sigmoid(InwardBound.apply(self.head(hidden), self.BOUND))
        if self.floor > 0:  # shut below the floor; the gradient as if it were not
            moving = moving + (moving * (moving >= self.floor) - moving).detach()
        return moving

    def forward(self, hidden: Tensor, frames: Tensor, picture: Tensor) -> Tensor:
        """hidden [B, T, Hd], frames and picture [B, T, 3, H, W] -> the gated picture."""
        moving = self.opening(hidden)  # [B, T, grid^2]
        if self.grid == 1:
            return frames + moving[..., None, None] * (picture - frames)
        # each cell's number spread over its pixels (a product with 0s and 1s: exact), times
        # their change; one matrix product and its transpose in the backward, where a
        # broadcast over the cells' pixels took sums over strided views
        moving = (moving @ self.cells).unflatten(-1, (1, *self.size))  # [B, T, 1, H, W]
        return frames + moving * (picture - frames)


class StillTracker(nn.Module):
    """What the still gate reads with ``model.still_reads=actions``: a small GRU fed the
    encoded input frame while it is a true one, and every action and the own-steps features
    (models/sampling.py). On the model's own pictures the frame is masked out, so the gate
    cannot read a stale rollout, which changes little, as a standing car and close further (a
    loop: measured, the core-fed gate shut on moving scenes in some seeds' rollouts); how far
    the car moves must come from the actions since the last true frame. Its state is the last
    element of the model's state tuple."""

    SIZE = 32

    def __init__(self, frame_features: int, action_size: int, clock_inputs: int) -> None:
        super().__init__()
        self.frame_features = frame_features
        self.gru = nn.GRU(frame_features + action_size + clock_inputs, self.SIZE,
                          batch_first=True)

    def forward(self, encoded: Tensor, actions: Tensor, clock: Tensor,
                state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """encoded [B, T, F], actions [B, T, A], clock [B, T, C] (its first feature 1 on the
        model's own pictures), state [1, B, SIZE] or None -> [B, T, SIZE], the next state."""
        true = 1.0 - clock[..., :1]  # [B, T, 1]
        return self.gru(torch.cat([encoded * true, actions, clock], -1), state)


class InwardBound(torch.autograd.Function):
    """x clamped to [-bound, bound]; its gradient passes unchanged, except where x is beyond the
    bound and descent would take it further out. A logit pushed past the bound stays near it
    (a plain clamp would pass no gradient there, and nothing could bring it back; passing all
    of it would let it run on to where the way back takes hundreds of steps)."""

    @staticmethod
    def forward(ctx, x: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp(-bound, bound)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        # descent moves x by -grad: out past +bound if grad < 0, past -bound if grad > 0
        outward = ((x > ctx.bound) & (grad < 0)) | ((x < -ctx.bound) & (grad > 0))
        return grad.masked_fill(outward, 0.0), None


def gate_param_groups(model: nn.Module, lr: float, fade_scale: float,
                      still_scale: float = 1.0) -> list[dict]:
    """The optimizer's parameter groups: the model's fade (if any) at fade_scale x lr, its
    still gate (if any) at still_scale x lr, the rest at lr; a gate at lr stays in the first
    group, gates at the same rate share one. At 3e-4, Adam moves a logit about 3e-4 a step:
    from trusting (0.99) to the ~0.3 a 30-step rollout wants is 5 units, 17,000 steps;
    model.fade_lr_scale and model.still_lr_scale let the gates keep up."""
    gates = ((getattr(model, "fade", None), fade_scale),
             (getattr(model, "still", None), still_scale))
    fast = [(module, lr * scale) for module, scale in gates
            if module is not None and scale != 1.0]
    if not fast:
        return [{"params": list(model.parameters())}]
    apart = {id(p) for module, _ in fast for p in module.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in apart]}]
    for module, rate in fast:  # the fade and the still gate share a group at the same rate
        params = [p for p in module.parameters() if p.requires_grad]
        if len(groups) > 1 and groups[-1]["lr"] == rate:
            groups[-1]["params"] += params
        else:
            groups.append({"params": params, "lr": rate})
    return groups


WARPS: dict[str, type[nn.Module] | None] = {"none": None, "affine": AffineWarp, "flow": FlowWarp}


def build_warp(name: str, frame_shape: tuple[int, int, int], hidden_size: int) -> nn.Module | None:
    """The warp called ``name`` (a key of :data:`WARPS`); None for ``none``."""
    warp = WARPS[name]
    return None if warp is None else warp(frame_shape, hidden_size)
