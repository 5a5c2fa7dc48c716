"""Per-step image metrics of predicted frames, and the predictors that learn nothing."""

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


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


METRICS = ("mse", "psnr", "ssim", "road_iou", "sharpness")
QUANTISATION_MSE = 1.0 / (12 * 255**2)  # of 8-bit frames: PSNR's ceiling, 58.9 dB

# CarRacing's default palette (gymnasium's car_racing.py), in [0, 1]: road tiles are grey
# (102, 102, 102) plus up to 5, the background (102, 204, 102) and grass (102, 230, 102) green,
# kerbs red and white, the car red, the indicator bar black. After area-averaging a pixel that
# is half road and half background has a green excess G - (R + B) / 2 of 51/255, so a pixel
# counts as road below 0.2: mostly grey, neither dark nor saturated (kerbs, car). The bottom
# 5/40 of the frame is the indicator bar, whose averaged white and black would look grey.
ROAD_MAX_GREEN_EXCESS = 0.2
BAR_FRACTION = 5 / 40
ROAD_MAX_RED_BLUE_GAP = 0.15
ROAD_BRIGHTNESS = (0.25, 0.6)


def road_mask(frames: torch.Tensor) -> torch.Tensor:
    """Where a frame shows road: frames [..., 3, H, W] in [0, 1] -> bool [..., H, W]."""
    red, green, blue = frames.unbind(dim=-3)
    brightness = frames.mean(dim=-3)
    mask = ((green - (red + blue) / 2 < ROAD_MAX_GREEN_EXCESS)
            & ((red - blue).abs() < ROAD_MAX_RED_BLUE_GAP)
            & (brightness > ROAD_BRIGHTNESS[0]) & (brightness < ROAD_BRIGHTNESS[1]))
    bar_rows = round(frames.shape[-2] * BAR_FRACTION)
    mask[..., frames.shape[-2] - bar_rows :, :] = False
    return mask


def road_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Intersection over union of the road masks: [N, 3, H, W] each -> [N]. 1 where neither
    frame shows road (they agree)."""
    pred_road, true_road = road_mask(pred), road_mask(target)
    union = (pred_road | true_road).flatten(1).sum(dim=1)
    inter = (pred_road & true_road).flatten(1).sum(dim=1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union).float())


def gradient_energy(frames: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, across and down: [N, 3, H, W] -> [N]."""
    across = (frames[..., :, 1:] - frames[..., :, :-1]).pow(2).flatten(1).mean(dim=1)
    down = (frames[..., 1:, :] - frames[..., :-1, :]).pow(2).flatten(1).mean(dim=1)
    return across + down


def sharpness(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The predicted frame's gradient energy over the true frame's: [N, 3, H, W] -> [N].
    1.0 is as detailed as the truth; a blur is below it."""
    return gradient_energy(pred) / gradient_energy(target).clamp(min=1e-12)


@torch.no_grad()
def per_step_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """MSE, PSNR, SSIM, road IoU and sharpness of every predicted frame: pred, target
    [B, T, 3, H, W] -> [B, T] each. Predictions are clamped to [0, 1], as a frame is.

    Frames live in [0, 1], hence data_range 1.0. PSNR stops at the noise of 8-bit
    quantisation, 10 log10(12 * 255**2) = 58.9 dB: a frame predicted exactly (copying a frame
    of a car standing still) would otherwise score inf and make every mean over episodes inf.
    SSIM uses torchmetrics' 11x11 Gaussian window, which fits a 32x32 frame: torchmetrics
    reflect-pads 5 pixels, so the border pixels are scored too.
    """
    B, T = pred.shape[:2]
    pred = pred.detach().float().cpu().flatten(0, 1).clamp(0.0, 1.0)  # [B*T, 3, H, W]
    target = target.detach().float().cpu().flatten(0, 1)
    mse = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    per_frame = {
        "mse": mse,
        "psnr": 10 * torch.log10(1.0 / mse.clamp(min=QUANTISATION_MSE)),
        "ssim": structural_similarity_index_measure(pred, target, data_range=1.0,
                                                    reduction="none"),
        "road_iou": road_iou(pred, target),
        "sharpness": sharpness(pred, target),
    }
    return {name: values.view(B, T) for name, values in per_frame.items()}


def psnr_per_frame(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR of every frame, as per_step_metrics scores it: [B, T, 3, H, W] each -> [B, T]."""
    return per_step_metrics(pred, target)["psnr"]


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


# The metrics a rollout is held to against the predictors that learn nothing, and which way is
# better. Sharpness is left out: copying a frame is perfectly sharp and says nothing of where.
HIGHER_IS_BETTER = {"mse": False, "psnr": True, "ssim": True, "road_iou": True}


def steps_worse(values: dict[str, dict[str, torch.Tensor]], strategy: str,
                baselines: tuple[str, ...]) -> dict[str, dict[str, list[int]]]:
    """metric -> baseline -> the steps (from 1) where `strategy`'s mean over the sequences is
    worse than the baseline's. values: strategy -> metric -> [N, T], as per_step_metrics."""
    worse = {}
    for metric, higher in HIGHER_IS_BETTER.items():
        ours = values[strategy][metric].double().mean(dim=0)  # [T]
        worse[metric] = {}
        for baseline in baselines:
            theirs = values[baseline][metric].double().mean(dim=0)
            losing = ours < theirs if higher else ours > theirs
            worse[metric][baseline] = (torch.nonzero(losing).flatten() + 1).tolist()
    return worse


def step_ranges(steps: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10'."""
    ranges, start = [], None
    for i, step in enumerate(steps):
        if start is None:
            start = step
        if i + 1 == len(steps) or steps[i + 1] != step + 1:
            ranges.append(f"{start}" if start == step else f"{start}-{step}")
            start = None
    return ", ".join(ranges)
