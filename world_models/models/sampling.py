"""Training on the model's own predictions, so that it learns to continue from what it paints.

Two ways, both with gradients:

- ``unroll`` is the open-loop rollout: true frames for a context, then only the model's own
  predictions (Chiappa et al. 2017 train on such stretches). rollout.autoregressive is this
  function without gradients.
- Scheduled sampling (Bengio et al. 2015): ``true_frame_probability(schedule, step)`` is the
  probability of feeding the true frame at a global step; ``scheduled_rollout``
  (models/scheduled.py) runs a window that, per sequence and step (or, with
  train.scheduled_sampling.draw=batch, per step for the whole batch), feeds the true frame with
  that probability and the model's previous prediction otherwise.

``open_loop_loss`` is a training window's loss under train.open_loop (a teacher-forced warm-up,
then the model's own rollouts). ``own_steps_features`` is what a model told of its own steps
(``model.own_steps_input``) reads; ``check_open_loop`` and ``check_schedule`` refuse settings
that cannot work, naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from world_models.errors import UserError

SCHEDULES = ("none", "linear", "exponential", "inverse_sigmoid")
KEYS = ("schedule", "start", "end", "decay", "decay_steps", "k", "draw")
DRAWS = ("sequence", "batch")  # a draw per sequence and step, or one per step for the batch
PREFIX = "train.scheduled_sampling"


def true_frame_probability(schedule: Mapping, step: int) -> float:
    """The probability of feeding the true frame at global step ``step``, from start to end::

        none             1
        linear           start -> end over decay_steps steps, then end (with_decay_steps)
        exponential      end + (start - end) * k**step                    (0 < k < 1)
        inverse_sigmoid  end + (start - end) * k / (k + exp(step / k))    (k >= 1)
    """
    name = schedule.get("schedule", "none")
    if name == "none":
        return 1.0
    start, end = float(schedule["start"]), float(schedule["end"])
    if name == "linear":
        done = min(step / schedule["decay_steps"], 1.0)
    elif name == "exponential":
        done = 1.0 - schedule["k"] ** step
    else:
        k = schedule["k"]
        done = 1.0 - k / (k + math.exp(min(step / k, 700.0)))  # exp overflows past ~709
    return start + (end - start) * done


def check_schedule(schedule: Mapping) -> None:
    """Refuse a schedule that cannot be drawn from, naming the key."""
    unknown = sorted(set(schedule) - set(KEYS))
    if unknown:
        raise UserError(f"{PREFIX}.{unknown[0]}: unknown key; expected {', '.join(KEYS)}")
    name = schedule.get("schedule", "none")
    if name not in SCHEDULES:
        raise UserError(f"{PREFIX}.schedule: expected one of {', '.join(SCHEDULES)}, "
                        f"got '{name}'")
    draw = schedule.get("draw", "sequence")
    if draw not in DRAWS:
        raise UserError(f"{PREFIX}.draw: expected sequence (a draw per sequence and step) or "
                        f"batch (one per step for the batch), got '{draw}'")
    if name == "none":
        return
    for key in ("start", "end"):
        value = schedule.get(key)
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise UserError(f"{PREFIX}.{key}: expected a probability in [0, 1], got {value}")
    decay_steps, decay, k = schedule.get("decay_steps"), schedule.get("decay"), schedule.get("k")
    if name == "linear" and decay_steps is not None:
        if not (isinstance(decay_steps, int | float) and decay_steps > 0):
            raise UserError(f"{PREFIX}.decay_steps: expected > 0 for linear, got {decay_steps}")
    elif name == "linear" and not (isinstance(decay, int | float) and 0 < decay <= 1):
        raise UserError(f"{PREFIX}.decay: expected a fraction of the run in (0, 1] for linear "
                        f"(or decay_steps > 0), got {decay}")
    if name == "exponential" and not (isinstance(k, int | float) and 0 < k < 1):
        raise UserError(f"{PREFIX}.k: expected 0 < k < 1 for exponential "
                        f"(e.g. 0.9997), got {k}")
    if name == "inverse_sigmoid" and not (isinstance(k, int | float) and k >= 1):
        raise UserError(f"{PREFIX}.k: expected k >= 1 for inverse_sigmoid (e.g. 2000), got {k}")


def with_decay_steps(schedule: Mapping, total_steps: int) -> dict:
    """The schedule with its linear decay as a step count: decay_steps when set, else the
    fraction `decay` of the run's `total_steps` optimizer steps (rounded, at least 1)."""
    schedule = dict(schedule)
    if schedule.get("decay_steps") is None and schedule.get("decay") is not None:
        schedule["decay_steps"] = max(1, round(schedule["decay"] * total_steps))
    return schedule


def unroll(model: nn.Module, frames: torch.Tensor, actions: torch.Tensor, context: int = 1,
           detach: bool = False, **latent) -> torch.Tensor:
    """Feed the true frames 0..context-1, then the model's own predictions, one step at a time.

    frames [B, >=context, 3, H, W] (only the first ``context`` are read), actions [B, T, A] ->
    the predictions of frames 1..T, [B, T, 3, H, W], unclamped. The predictions of frames
    1..context come from true frames in one call; from frame context+1 on the model sees only
    what it painted, as ``fed_back`` makes it (clamped, and rounded to 8 bits with
    model.feedback=uint8). With ``detach`` no gradient flows through the fed-back frames.
    A model with ``counts_own_steps`` is told, at each step, how many steps it has been feeding
    on its own predictions. ``latent`` goes to a model with a latent (models/latent.py):
    ``noise``, a generator to sample with, and in training ``targets``, the true frames 1..T
    [B, T, 3, H, W] its posterior sees, one step at a time.
    """
    steps = actions.shape[1]
    counts = getattr(model, "counts_own_steps", False)
    next_frames, state = model(frames[:, :context], actions[:, :context],
                               **latent_step(latent, 0, context))  # [B, context, ...]
    predictions = [next_frames]
    for t in range(context, steps):
        frame = fed_back(model, next_frames[:, -1:])  # [B, 1, 3, H, W]
        frame = frame.detach() if detach else frame
        own = {"own_steps": t - context + 1} if counts else {}
        next_frames, state = model(frame, actions[:, t : t + 1], state, **own,
                                   **latent_step(latent, t, t + 1))
        predictions.append(next_frames)
    return torch.cat(predictions, dim=1)  # [B, T, 3, H, W]


def latent_step(latent: dict, start: int, stop: int) -> dict:
    """The latent keywords of steps start..stop-1: the generator, and the targets' slice."""
    step = {key: value for key, value in latent.items() if value is not None}
    if "targets" in step:
        step["targets"] = step["targets"][:, start:stop]
    return step


FEEDBACK = ("float", "uint8")


def fed_back(model: nn.Module, frame: torch.Tensor) -> torch.Tensor:
    """A predicted frame as the model is fed it back: clamped to [0, 1] (a frame never leaves
    it, and an overshoot fed back would compound) and, with model.feedback=uint8, rounded to
    the 8-bit levels the true frames come in. Rounded, a change under half a level (a still
    scene's leak of a fade or a flow) does not reach the next step, so it cannot add up over
    a long rollout; the gradient passes the rounding as if it were not there."""
    frame = frame.clamp(0.0, 1.0)
    hparams = getattr(model, "hparams", {})
    if hparams.get("feedback", "float") == "uint8":
        frame = frame + ((frame * 255).round() / 255 - frame).detach()
    return frame


OWN_STEP_FEATURES = 2


def own_steps_features(own_steps: int, actions: torch.Tensor) -> torch.Tensor:
    """[B, T, 2] for every step: whether the input frame is the model's own prediction, and
    log(1 + own_steps) / 5 (about 1 at 150 steps), so that the model can be sharp on true
    frames and fall back on what it expects where its own picture has lost the world."""
    value = torch.tensor([float(own_steps > 0), math.log1p(own_steps) / 5.0],
                         dtype=actions.dtype, device=actions.device)
    return value.expand(*actions.shape[:-1], OWN_STEP_FEATURES)


def open_loop_horizon(settings: Mapping, progress: float) -> int:
    """Open-loop steps per window at `progress` (a fraction of the run): 0 during
    train.open_loop.warmup, then 1, growing linearly to train.open_loop.horizon over the next
    train.open_loop.ramp of the run (a curriculum: a fresh model's own rollouts are noise,
    nothing to learn from over a long stretch)."""
    progress = progress - settings.get("warmup", 0.0)
    if progress < 0:
        return 0
    ramp = settings.get("ramp", 0.0)
    done = min(progress / ramp, 1.0) if ramp else 1.0
    return max(1, round(1 + done * (settings["horizon"] - 1)))


OPEN_LOOP_KEYS = ("horizon", "context", "warmup", "warmup_window", "ramp", "tf_weight",
                  "detach")


def check_open_loop(settings: dict, schedule: dict, protocol: str) -> None:
    """Refuse open-loop training settings that cannot work, naming the key."""
    prefix = "train.open_loop"
    unknown = sorted(set(settings) - set(OPEN_LOOP_KEYS))
    if unknown:
        raise UserError(f"{prefix}.{unknown[0]}: unknown key; expected "
                        f"{', '.join(OPEN_LOOP_KEYS)}")
    horizon = settings.get("horizon", 0)
    if not isinstance(horizon, int) or horizon < 0:
        raise UserError(f"{prefix}.horizon: expected an integer >= 0 (0 = off), got {horizon}")
    if not horizon:
        return
    context = settings.get("context", 1)
    if not isinstance(context, int) or context < 1:
        raise UserError(f"{prefix}.context: expected an integer >= 1, got {context}")
    for key in ("warmup", "ramp"):
        value = settings.get(key, 0.0)
        if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise UserError(f"{prefix}.{key}: expected a fraction of the run in [0, 1], "
                            f"got {value}")
    window = settings.get("warmup_window", 10)
    if not isinstance(window, int) or window < 2:
        raise UserError(f"{prefix}.warmup_window: expected an integer >= 2, got {window}")
    tf_weight = settings.get("tf_weight", 0.0)
    if not isinstance(tf_weight, int | float) or tf_weight < 0:
        raise UserError(f"{prefix}.tf_weight: expected >= 0, got {tf_weight}")
    if protocol != "bptt":
        raise UserError(f"{prefix}.horizon: needs train.protocol=bptt, got {protocol}")
    if schedule.get("schedule", "none") != "none":
        raise UserError(f"{prefix}.horizon: replaces scheduled sampling; set "
                        f"train.scheduled_sampling.schedule=none (got "
                        f"'{schedule['schedule']}')")


def open_loop_loss(model: nn.Module, inputs: torch.Tensor, frames: torch.Tensor,
                   actions: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The loss of a window (a WorldModel's, under train.open_loop) whose last `horizon` steps
    the model predicts from its own predictions, gradients through them, plus
    train.open_loop.tf_weight times the teacher-forced loss of the whole window; and the
    horizon. During the warmup (horizon 0): the teacher-forced loss of a
    train.open_loop.warmup_window-frame slice of each window, so that the model learns one
    step from many cheap optimizer steps before it learns from its own rollouts. inputs: the
    (noisy) frames [B, L, 3, H, W] it sees, frames: the clean targets, actions [B, L, A]."""
    settings = model.hparams.open_loop
    horizon = model.open_loop_horizon()
    if horizon == 0:
        length = min(settings.get("warmup_window", 10), frames.shape[1])
        start = torch.randint(0, frames.shape[1] - length + 1, (),
                              generator=model.training_generator()).item()
        window = slice(start, start + length)
        next_frames_pred, _ = model(inputs[:, window][:, :-1], actions[:, window][:, :-1],
                                    **model.posterior_inputs(frames[:, window][:, 1:]))
        return model.objective(next_frames_pred, frames[:, window][:, 1:]), 0
    steps = frames.shape[1] - 1
    horizon = min(horizon, steps - settings.get("context", 1))
    predictions = unroll(model, inputs, actions[:, :-1], context=steps - horizon,
                         detach=settings.get("detach", False),
                         **model.posterior_inputs(frames[:, 1:]))  # [B, T, 3, H, W]
    loss = model.objective(predictions, frames[:, 1:])
    if settings.get("tf_weight", 0.0):
        teacher_forced, _ = model(inputs[:, :-1], actions[:, :-1],
                                  **model.posterior_inputs(frames[:, 1:]))
        loss = loss + settings["tf_weight"] * model.objective(teacher_forced, frames[:, 1:])
    return loss, horizon
