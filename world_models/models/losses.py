"""The training objective: MSE plus the optional terms (L1, SSIM, log-MSE), and a
differentiable SSIM."""

import torch
import torch.nn.functional as F

from world_models.metrics import QUANTISATION_MSE

SSIM_STRIDE = 4


def objective(pred: torch.Tensor, true: torch.Tensor, l1_weight: float = 0.0,
              ssim_weight: float = 0.0, log_mse_weight: float = 0.0,
              ssim_offset: int = 0) -> torch.Tensor:
    """The training loss of predicted frames [B, T, 3, H, W] against the true ones: MSE, plus
    l1_weight times the mean absolute error, plus ssim_weight times 1 - SSIM of every
    SSIM_STRIDE-th frame from ssim_offset, plus log_mse_weight times the mean log10 MSE of the
    frames (-PSNR / 10)."""
    loss = F.mse_loss(pred, true)
    if l1_weight:
        loss = loss + l1_weight * F.l1_loss(pred, true)
    if ssim_weight:
        # MSE barely notices a faint pattern painted over flat truth (the red and blue
        # channels of grass and road are one flat value); SSIM's structure term does.
        # A quarter of the steps, moving with the caller's offset, keeps the term cheap.
        some_pred = pred[:, ssim_offset::SSIM_STRIDE].flatten(0, 1)  # [B*T', 3, H, W]
        some_true = true[:, ssim_offset::SSIM_STRIDE].flatten(0, 1)
        if len(some_pred):
            loss = loss + ssim_weight * (1 - fast_ssim(some_pred, some_true).mean())
    if log_mse_weight:
        # As mean PSNR does, weigh a frame's error by 1 / its MSE: a still scene's error
        # growing 1e-5 -> 1e-4 costs what a moving one's 1e-2 -> 1e-1 does; MSE sees one.
        per_frame = (pred - true).pow(2).flatten(2).mean(-1)  # [B, T]
        floor = QUANTISATION_MSE  # PSNR's ceiling: no reward for being exacter than 8 bits
        loss = loss + log_mse_weight * torch.log10(per_frame + floor).mean()
    return loss


def gaussian_window_matrix(size: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """[size, size] matrix M: M @ signal is the signal reflect-padded by 5 and filtered with
    SSIM's 11-tap Gaussian (sigma 1.5), as torchmetrics pads and filters each axis."""
    x = torch.arange(11, dtype=torch.float64) - 5
    taps = torch.exp(-(x**2) / (2 * 1.5**2))
    taps = taps / taps.sum()
    index = torch.arange(-5, size + 5).abs()  # reflect padding: -1 -> 1, size -> size - 2
    index = torch.where(index > size - 1, 2 * (size - 1) - index, index)
    pad = torch.zeros(size + 10, size, dtype=torch.float64)
    pad[torch.arange(size + 10), index] = 1.0
    conv = torch.zeros(size, size + 10, dtype=torch.float64)
    for row in range(size):
        conv[row, row : row + 11] = taps
    return (conv @ pad).to(dtype=dtype, device=device)


def fast_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each frame, [N, C, H, W] each -> [N], as torchmetrics computes it for frames in
    [0, 1] (11-tap Gaussian window, sigma 1.5, reflect padding, the mean of the full map), with
    the padded window as one small matrix per axis: differentiable and cheap enough to train on
    (torchmetrics' 2-D convolution took 12 s forward and backward for 1,600 frames here, a
    grouped 1-D one 8 s). A test holds it equal to torchmetrics."""
    # The variances are differences of near-equal windowed moments: in bfloat16 (8 bits of
    # mantissa, trainer.precision=bf16-mixed) they cancel into noise and SSIM exceeds 1, so the
    # loss goes negative. Always float32.
    with torch.autocast(pred.device.type, enabled=False):
        return windowed_ssim(pred.float(), target.float())


def windowed_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """fast_ssim in the inputs' dtype."""
    channels, height, width = pred.shape[1:]
    rows = gaussian_window_matrix(height, pred.dtype, pred.device)  # [H, H]
    cols = gaussian_window_matrix(width, pred.dtype, pred.device)  # [W, W]
    stacked = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    stacked = rows @ stacked @ cols.T  # [N, 5C, H, W], windowed down and across
    mu_p, mu_t, pp, tt, pt = stacked.split(channels, dim=1)  # each [N, C, H, W]
    var_p = (pp - mu_p**2).clamp(min=0.0)
    var_t = (tt - mu_t**2).clamp(min=0.0)
    cov = pt - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return ssim_map.flatten(1).mean(dim=1)
