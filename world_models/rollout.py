"""Teacher forcing and autoregressive rollouts of a world model: tensors in, tensors out.

Both take the true frames [B, T+1, 3, H, W] and actions [B, T, A] of a batch of
sequences and return the predictions of frames 1..T, [B, T, 3, H, W], as the model
paints them (not clamped), on the model's device. `model` is anything with
WorldModel's forward(frames, actions, state=None) -> (next_frames, state).
"""

from contextlib import contextmanager

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's weights (CPU for a model without any)."""
    weight = next(iter(model.parameters()), None)
    return weight.device if weight is not None else torch.device("cpu")


@contextmanager
def evaluating(model: nn.Module):
    """Eval mode inside the block, the caller's mode after it (a callback may be mid-fit)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def teacher_forcing(model: nn.Module, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Predict frame t+1 from the true frame t, for every t: the error of one step at a time."""
    device = model_device(model)
    with evaluating(model):
        # The core starts from a zero state and sees the true frames 0..T-1 in one call.
        next_frames, _ = model(frames[:, :-1].to(device), actions.to(device))  # [B, T, 3, H, W]
    return next_frames


@torch.no_grad()
def autoregressive(
    model: nn.Module, frames: torch.Tensor, actions: torch.Tensor, context: int = 1
) -> torch.Tensor:
    """Feed the true frames 0..context-1, then the model's own predictions, one step at a time.

    The predictions of frames 1..context come from true frames (as in teacher
    forcing); from frame context+1 on, the model only sees what it painted itself.
    """
    steps = actions.shape[1]
    if not 1 <= context <= steps:
        raise ValueError(f"context must be in [1, {steps}], got {context}")
    device = model_device(model)
    frames, actions = frames.to(device), actions.to(device)
    with evaluating(model):
        next_frames, state = model(frames[:, :context], actions[:, :context])  # [B, context, ...]
        predictions = [next_frames]
        for t in range(context, steps):
            # A frame is never outside [0, 1]; a linear decoder's overshoot fed back in
            # would be an input the model never saw in training, and it compounds.
            frame = next_frames[:, -1:].clamp(0.0, 1.0)  # [B, 1, 3, H, W]
            next_frames, state = model(frame, actions[:, t : t + 1], state)
            predictions.append(next_frames)
    return torch.cat(predictions, dim=1)  # [B, T, 3, H, W]


@torch.no_grad()
def dream_step(model: nn.Module, frame: torch.Tensor, action: torch.Tensor, state=None):
    """One step of a rollout driven live: frame [B, 3, H, W], action [B, A] -> the next frame
    [B, 3, H, W] and the state to pass back. The frame is clamped to [0, 1] first, as
    autoregressive() clamps what it feeds back."""
    device = model_device(model)
    with evaluating(model):
        next_frame, state = model(frame.clamp(0.0, 1.0)[:, None].to(device),
                                  action[:, None].to(device), state)
    return next_frame[:, 0], state
