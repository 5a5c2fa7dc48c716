"""Losses of predictors that learn nothing, on the same windows as the model's test loss."""

import torch


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
