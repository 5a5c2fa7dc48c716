"""Per-step image metrics of predicted frames, and the predictors that learn nothing."""

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)


@torch.no_grad()
def window_baselines(loader, mean_frame: torch.Tensor) -> dict[str, float]:
    """MSE over frames 1..L-1 of every window of `loader` for two trivial predictors.

    copy_last: the next frame equals the current one. mean_frame: the next frame
    is the mean training frame [3, H, W]. Windows are weighted equally, as in test/loss.
    """
    sums = {"copy_last": 0.0, "mean_frame": 0.0}
    windows = 0
    for batch in loader:
        frames = batch["frames"]  # [B, L, 3, H, W]
        targets = frames[:, 1:]
        sums["copy_last"] += ((frames[:, :-1] - targets) ** 2).mean(dim=(1, 2, 3, 4)).sum().item()
        sums["mean_frame"] += ((mean_frame - targets) ** 2).mean(dim=(1, 2, 3, 4)).sum().item()
        windows += len(frames)
    return {name: total / windows for name, total in sums.items()}


METRICS = ("mse", "psnr", "ssim")


@torch.no_grad()
def per_step_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """MSE, PSNR and SSIM of every predicted frame: pred, target [B, T, 3, H, W] -> [B, T] each.

    Frames live in [0, 1], hence data_range 1.0. PSNR is inf for a frame predicted
    exactly. SSIM uses torchmetrics' 11x11 Gaussian window, which fits a 32x32 frame:
    torchmetrics reflect-pads 5 pixels, so the border pixels are scored too.
    """
    B, T = pred.shape[:2]
    pred = pred.detach().float().cpu().flatten(0, 1)  # [B*T, 3, H, W]
    target = target.detach().float().cpu().flatten(0, 1)
    per_frame = {
        "mse": ((pred - target) ** 2).mean(dim=(1, 2, 3)),
        "psnr": peak_signal_noise_ratio(
            pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3)
        ),
        "ssim": structural_similarity_index_measure(pred, target, data_range=1.0,
                                                    reduction="none"),
    }
    return {name: values.view(B, T) for name, values in per_frame.items()}


def copy_last_prediction(frames: torch.Tensor, context: int | None = None) -> torch.Tensor:
    """Predict every frame 1..T as the last true frame the predictor was given.

    frames [B, T+1, 3, H, W] -> [B, T, 3, H, W]. One step at a time (context None)
    that is frame t-1; in a rollout seeded with `context` true frames it is frame
    context-1 from then on (frame t-1 before, while true frames still arrive).
    """
    steps = frames.shape[1] - 1
    last_known = torch.arange(steps)
    if context is not None:
        last_known = last_known.clamp(max=context - 1)
    return frames[:, last_known]


def mean_frame_prediction(mean_frame: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Predict every frame as the mean training frame [3, H, W], shaped like target."""
    return mean_frame.to(target).expand_as(target)


def per_step_table(values: dict[str, dict[str, torch.Tensor]]) -> list[dict]:
    """strategy -> metric -> [N, T] values -> rows {step, strategy, metric, mean, std, n}.

    Steps count from 1 (the prediction of frame 1). std is the spread of the N
    sequences (population std, 0 for one sequence), not an error of the mean.
    """
    rows = []
    for strategy, metrics in values.items():
        for metric, per_sequence in metrics.items():  # [N, T]
            per_sequence = per_sequence.double()
            mean = per_sequence.mean(dim=0)
            std = per_sequence.std(dim=0, correction=0)
            for t in range(per_sequence.shape[1]):
                rows.append({"step": t + 1, "strategy": strategy, "metric": metric,
                             "mean": mean[t].item(), "std": std[t].item(),
                             "n": per_sequence.shape[0]})
    return rows
