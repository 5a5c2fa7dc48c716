"""evaluate.py rollout.samples=K: every sequence's K sampled rollouts and two reference
ensembles, scored as forecasts (forecast.py) step by step.

Ensembles (strategies in summary.json and rollout_metrics.csv, with forecast.FORECAST_METRICS):

- ``sampled``: K open-loop rollouts of a model with a latent, z drawn from its prior;
- ``deterministic``: the model's one deterministic rollout, as if repeated K times (every
  forecast metric of K copies equals that of one): for a model with a latent, the rollout
  with z at its prior's mean at every step, the ``autoregressive`` strategy's rollout;
- ``climatology``: K frames drawn at random from the training split, the same at every step.

The two single-frame baselines get an ``energy`` beside their MSE (``copy_last``: the first
frame repeated; ``mean_frame``): a one-member ensemble's energy score is its distance to the
truth, so every curve of a forecast figure has its references on the same scale.

The draws of sequence i come from generators seeded by (rollout.seed, i) alone
(forecast.sequence_generator), so a second run gives the same numbers.
"""

from __future__ import annotations

import torch

from world_models.forecast import (
    FORECAST_METRICS,
    climatology_ensemble,
    energy_score,
    forecast_metrics,
    sequence_generator,
)
from world_models.rollout import autoregressive, sampled_rollouts

ENSEMBLES = ("sampled", "deterministic", "climatology")
BASELINE_ENERGY = ("copy_last", "mean_frame")  # evaluate.py's baselines, given an energy
SHOWN_SAMPLES = 4  # rows of samples in the grid and the GIF
SAMPLES_STREAM, CLIMATOLOGY_STREAM = 0, 1


def is_stochastic(model) -> bool:
    return getattr(model, "latent", None) is not None


def ensemble_values(model, sequences: list[dict], train_episodes: list, horizon: int,
                    context: int, samples: int, seed: int, mean_frame: torch.Tensor,
                    persistence: float = 0.0, temperature: float = 1.0):
    """strategy -> metric -> [N, horizon] for the ensembles (ENSEMBLES; ``sampled`` only for a
    model with a latent) and the baselines' energy (BASELINE_ENERGY), and the first
    sequence's first samples to show, [S, T, 3, H, W] (None for a deterministic model).
    samples < 2: nothing to score ({}, None). persistence, temperature: how the samples' z are
    drawn over the steps (rollout.sampled_rollouts)."""
    if samples < 2:
        return {}, None
    stochastic = is_stochastic(model)
    names = ENSEMBLES if stochastic else ENSEMBLES[1:]
    values = {name: {metric: [] for metric in FORECAST_METRICS} for name in names}
    values |= {name: {"energy": []} for name in BASELINE_ENERGY}
    climate = [episode.frames for episode in train_episodes]
    shown = None
    for index, sequence in enumerate(sequences):
        frames = sequence["frames"][: horizon + 1]  # [T+1, 3, H, W]
        actions = sequence["actions"][:horizon]  # [T, A]
        truth = frames[1:]
        ensembles = {
            "deterministic": autoregressive(model, frames[None], actions[None], context).cpu(),
            "climatology": climatology_ensemble(
                climate, samples, horizon, sequence_generator(seed, index, CLIMATOLOGY_STREAM)),
        }
        if stochastic:
            ensembles["sampled"] = sampled_rollouts(
                model, frames, actions, context, samples,
                sequence_generator(seed, index, SAMPLES_STREAM), persistence,
                temperature)  # [K, T, ...]
            if shown is None:
                shown = ensembles["sampled"][:SHOWN_SAMPLES]
        for name, ensemble in ensembles.items():
            for metric, per_step in forecast_metrics(ensemble, truth).items():
                values[name][metric].append(per_step[None])  # [1, T]
        baselines = {"copy_last": frames[context - 1], "mean_frame": mean_frame}  # [3, H, W]
        for name, frame in baselines.items():
            one = frame.expand(1, *truth.shape)  # [1, T, 3, H, W], a one-member ensemble
            values[name]["energy"].append(energy_score(one, truth)[None])
    return {name: {m: torch.cat(v) for m, v in ms.items()} for name, ms in values.items()}, shown


def describe(model, samples: int, seed: int, persistence: float = 0.0,
             temperature: float = 1.0) -> dict | None:
    """What summary.json says of the ensembles; None when none were scored."""
    if samples < 2:
        return None
    return {
        "samples": samples,
        "seed": seed,
        "persistence": persistence,
        "temperature": temperature,
        "sampled": "K rollouts, z drawn from the prior" if is_stochastic(model) else None,
        "deterministic": ("the rollout with z at the prior's mean" if is_stochastic(model)
                          else "the model's rollout (deterministic), as K copies"),
        "climatology": "K random training frames, the same at every step",
    }


def note(model, samples: int) -> str | None:
    """The one line evaluate prints about rollout.samples, if any."""
    if samples > 1 and not is_stochastic(model):
        return (f"rollout.samples={samples}: the model is deterministic (model.latent=none); "
                f"its one rollout is scored as the deterministic ensemble, beside climatology")
    return None


def format_forecasts(metrics: dict, samples: int) -> str:
    """A table of the ensembles' main forecast metrics at the quoted steps and over all steps
    (metrics: summary.json's strategy -> metric -> {step_k | mean_over_steps: value})."""
    keys = list(metrics["deterministic"]["energy"])
    header = [key.replace("step_", "@").replace("mean_over_steps", "mean") for key in keys]
    title = f"forecast (K={samples})"
    lines = [f"{title:<28}" + "".join(f"{h:>11}" for h in header)]
    for name in ENSEMBLES:
        for metric in ("best_mse", "mean_mse", "energy", "road_iou", "sharpness"):
            if name in metrics:
                row = metrics[name][metric]
                lines.append(f"{name + ' ' + metric:<28}" + "".join(
                    f"{'n/a' if row[k] is None else f'{row[k]:.4g}':>11}" for k in keys))
    return "\n".join(lines)
