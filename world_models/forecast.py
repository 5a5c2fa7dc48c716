"""Forecast metrics: K sampled futures of one sequence scored against the one that happened.

A model that samples futures cannot be judged by the MSE of one sample: a sharp sample of a
plausible road scores worse than a blur of all roads. These metrics score the ensemble::

    scores = forecast_metrics(samples, truth)  # [K, T, 3, H, W], [T, 3, H, W] -> metric -> [T]

best_mse, best_ssim  the best of the K samples per step (the SVG/SAVP protocol): is the true
                     future among the samples?
sample_mse           the mean MSE of a single sample
mean_mse             the MSE of the mean of the K samples (what an MSE-trained model aims at)
energy               the energy score, a proper scoring rule for ensembles (lower is better):
                     mean_k ||x_k - y|| - 1/2 mean_{k != j} ||x_k - x_j||, the Euclidean norm
                     over all pixels and channels. The first term rewards samples near the
                     truth, the second credits their spread, so a model gains nothing by
                     hiding its uncertainty in a blur nor by scattering samples at random.
                     One sample (or K copies of one): its distance to the truth.
road_iou, sharpness  of each sample against the truth (metrics.py), averaged over the samples

Samples are clamped to [0, 1], as metrics.per_step_metrics clamps a prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from world_models.data.datamodule import to_float_frames
from world_models.metrics import per_step_metrics

FORECAST_METRICS = ("best_mse", "best_ssim", "sample_mse", "mean_mse", "energy", "road_iou",
                    "sharpness")


def energy_score(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The energy score of every step: samples [K, T, 3, H, W], truth [T, 3, H, W] -> [T].

    The spread term averages over the K (K - 1) ordered pairs of distinct samples (the fair
    estimator: a K-sample ensemble drawn from the truth's own distribution scores, in
    expectation, what the distribution would); with one sample it is 0."""
    K = samples.shape[0]
    flat = samples.flatten(2).transpose(0, 1).double()  # [T, K, 3HW]
    target = truth.flatten(1).double()[:, None]  # [T, 1, 3HW]
    to_truth = (flat - target).norm(dim=-1).mean(dim=1)  # [T]
    if K < 2:
        return to_truth
    pairs = torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")  # [T, K, K]
    return to_truth - 0.5 * pairs.sum(dim=(1, 2)) / (K * (K - 1))


@torch.no_grad()
def forecast_metrics(samples: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every forecast metric of every step: samples [K, T, 3, H, W], truth [T, 3, H, W] ->
    metric -> [T] (float64 for the energy score, float32 otherwise)."""
    samples = samples.detach().float().cpu().clamp(0.0, 1.0)
    truth = truth.detach().float().cpu()
    each = per_step_metrics(samples, truth.expand_as(samples))  # metric -> [K, T]
    return {
        "best_mse": each["mse"].min(dim=0).values,
        "best_ssim": each["ssim"].max(dim=0).values,
        "sample_mse": each["mse"].mean(dim=0),
        "mean_mse": ((samples.mean(dim=0) - truth) ** 2).mean(dim=(1, 2, 3)),
        "energy": energy_score(samples, truth),
        "road_iou": each["road_iou"].mean(dim=0),
        "sharpness": each["sharpness"].mean(dim=0),
    }


def climatology_ensemble(episodes: Sequence[np.ndarray], samples: int, steps: int,
                         generator: torch.Generator) -> torch.Tensor:
    """K frames drawn at random, with replacement and uniformly over all frames, from
    `episodes` (uint8 [N_i, H, W, 3] each, the training split's), the same K at every step:
    [K, steps, 3, H, W]. The forecast of one who knows what the world looks like, not where
    it is: the ensemble counterpart of the mean-frame baseline."""
    counts = torch.tensor([len(frames) for frames in episodes])
    picks = torch.randint(int(counts.sum()), (samples,), generator=generator)
    starts = torch.cumsum(counts, 0) - counts  # [E], the first frame of each episode
    episode = torch.searchsorted(starts, picks, right=True) - 1  # [K]
    frames = [torch.from_numpy(np.asarray(episodes[e][p - starts[e]]))
              for e, p in zip(episode.tolist(), picks.tolist(), strict=True)]
    drawn = to_float_frames(torch.stack(frames))  # [K, 3, H, W]
    return drawn[:, None].expand(samples, steps, *drawn.shape[1:])


def sequence_generator(seed: int, index: int, stream: int) -> torch.Generator:
    """A CPU generator for sequence `index` of an evaluation and one of its streams (samples,
    climatology), from rollout.seed: a sequence draws the same whatever the batch or the
    other sequences, so a second run, or a run on a subset, gives the same numbers."""
    state = np.random.SeedSequence([seed, index, stream]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))
