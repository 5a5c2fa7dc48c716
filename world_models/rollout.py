"""Teacher forcing and autoregressive rollouts of a world model: tensors in, tensors out.

Both take the true frames [B, T+1, 3, H, W] and actions [B, T, A] of a batch of
sequences and return the predictions of frames 1..T, [B, T, 3, H, W], as the model
paints them (not clamped), on the model's device. `model` is anything with
WorldModel's forward(frames, actions, state=None) -> (next_frames, state).
"""

from contextlib import contextmanager

import torch
from torch import nn

from world_models.metrics import (
    copy_last_prediction,
    mean_frame_prediction,
    per_step_metrics,
    psnr_per_frame,
)
from world_models.models.latent import PersistentNoise
from world_models.models.sampling import fed_back, unroll


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
    with evaluating(model):
        return unroll(model, frames.to(device), actions.to(device), context)


@torch.no_grad()
def sampled_rollouts(model: nn.Module, frames: torch.Tensor, actions: torch.Tensor,
                     context: int, samples: int, generator: torch.Generator,
                     persistence: float = 0.0, temperature: float = 1.0) -> torch.Tensor:
    """`samples` open-loop rollouts of one sequence, frames [T+1, 3, H, W] and actions [T, A],
    a model with a latent drawing each step's z from its prior with `generator` (models/
    latent.py): [K, T, 3, H, W] on the CPU. The same generator state gives the same rollouts.
    persistence > 0: the draws are correlated over the steps; temperature != 1: their spread is
    scaled (latent.PersistentNoise)."""
    device = model_device(model)
    batch_frames = frames[None, :context].expand(samples, *frames[:context].shape).to(device)
    batch_actions = actions[None].expand(samples, *actions.shape).to(device)
    with evaluating(model):
        noise = (PersistentNoise(generator, persistence, temperature)
                 if persistence or temperature != 1 else generator)
        return unroll(model, batch_frames, batch_actions, context, noise=noise).cpu()


def predictions_and_scores(model: nn.Module, frames: torch.Tensor, actions: torch.Tensor,
                           context: int, mean_frame: torch.Tensor | None = None):
    """Every strategy's predictions of frames 1..T and their per-step metrics: the one scoring
    path of evaluate.py and the rollout callback.

    Returns (predictions: strategy -> [B, T, 3, H, W] on the CPU, scores: strategy -> metric ->
    [B, T]). Strategies: teacher_forcing, autoregressive, copy_last (the last true frame the
    rollout was given: its fair baseline, it knows no more) and, given a mean frame, mean_frame.
    """
    truth = frames[:, 1:].cpu()  # [B, T, 3, H, W]
    predictions = {
        "teacher_forcing": teacher_forcing(model, frames, actions).cpu(),
        "autoregressive": autoregressive(model, frames, actions, context).cpu(),
        "copy_last": copy_last_prediction(frames.cpu(), context),
    }
    if mean_frame is not None:
        predictions["mean_frame"] = mean_frame_prediction(mean_frame, truth)
    scores = {name: per_step_metrics(pred, truth) for name, pred in predictions.items()}
    return predictions, scores


@torch.no_grad()
def dream_step(model: nn.Module, frame: torch.Tensor, action: torch.Tensor, state=None,
               own_steps: int = 0):
    """One step of a rollout driven live: frame [B, 3, H, W], action [B, A] -> the next frame
    [B, 3, H, W] and the state to pass back. The frame is fed as autoregressive() feeds back
    a prediction (sampling.fed_back: clamped, and rounded with model.feedback=uint8).
    own_steps: how many steps the model has fed on its own predictions (0 for the true start
    frame), for a model that reads it."""
    device = model_device(model)
    own = {"own_steps": own_steps} if getattr(model, "counts_own_steps", False) else {}
    with evaluating(model):
        next_frame, state = model(fed_back(model, frame)[:, None].to(device),
                                  action[:, None].to(device), state, **own)
    return next_frame[:, 0], state


@torch.no_grad()
def action_sensitivity(model: nn.Module, frames: torch.Tensor, actions: torch.Tensor,
                       other_actions: torch.Tensor, context: int = 1,
                       true_psnr: torch.Tensor | None = None) -> torch.Tensor:
    """Does the model listen to its actions? Per step, the PSNR of its open-loop rollout under
    the true actions minus under `other_actions` (another episode's), from the same true
    frames: frames [B, T+1, 3, H, W], actions and other_actions [B, T, A] -> [B, T] in dB.
    Positive: the true actions explain the future better; 0: the actions are ignored.
    true_psnr [B, T]: the true-action rollout's PSNR if already scored (not rolled out again)."""
    truth = frames[:, 1:].cpu()  # [B, T, 3, H, W]
    if true_psnr is None:
        true_psnr = psnr_per_frame(autoregressive(model, frames, actions, context).cpu(), truth)
    other_run = autoregressive(model, frames, other_actions, context).cpu()
    return true_psnr - psnr_per_frame(other_run, truth)
