"""The training objective: MSE plus the optional terms (L1, SSIM, log-MSE), and a
differentiable SSIM."""

import functools

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
    per_frame = None  # [B, T]: each frame's MSE, when the log-MSE term needs it
    if log_mse_weight:
        per_frame = (pred - true).pow(2).flatten(2).mean(-1)
        loss = per_frame.mean()  # the MSE, from the same squares (every frame has as many)
    else:
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
        floor = QUANTISATION_MSE  # PSNR's ceiling: no reward for being exacter than 8 bits
        loss = loss + log_mse_weight * torch.log10(per_frame + floor).mean()
    return loss


@functools.lru_cache(maxsize=16)
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
    the padded window as one small matrix per axis: differentiable in `pred` and cheap enough
    to train on (torchmetrics' 2-D convolution took 12 s forward and backward for 1,600 frames
    here, a grouped 1-D one 8 s). Tests hold it equal to torchmetrics, and its gradient to
    autograd's through `windowed_ssim`."""
    # The variances are differences of near-equal windowed moments: in bfloat16 (8 bits of
    # mantissa, trainer.precision=bf16-mixed) they cancel into noise and SSIM exceeds 1, so the
    # loss goes negative. Always float32.
    with torch.autocast(pred.device.type, enabled=False):
        return WindowedSSIM.apply(pred.float(), target.float().detach())


def window(maps: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """maps [..., H, W] filtered down and across with SSIM's padded window (or, with
    `transpose`, its adjoint: how a gradient flows back through the filter)."""
    rows = gaussian_window_matrix(maps.shape[-2], maps.dtype, maps.device)  # [H, H]
    cols = gaussian_window_matrix(maps.shape[-1], maps.dtype, maps.device)  # [W, W]
    if transpose:
        rows, cols = rows.T, cols.T
    return rows @ maps @ cols.T


def ssim_parts(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The windowed means and the four factors of SSIM's map, S = (a1 * a2) / (b1 * b2), and
    where each variance is positive (they are clamped at 0), all [N, C, H, W]."""
    channels = pred.shape[1]
    stacked = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    mu_p, mu_t, pp, tt, pt = window(stacked).split(channels, dim=1)  # each [N, C, H, W]
    var_p, var_t = pp - mu_p**2, tt - mu_t**2
    positive = var_p >= 0
    c1, c2 = 0.01**2, 0.03**2
    a1 = 2 * mu_p * mu_t + c1
    a2 = 2 * (pt - mu_p * mu_t) + c2
    b1 = mu_p**2 + mu_t**2 + c1
    b2 = var_p.clamp(min=0.0) + var_t.clamp(min=0.0) + c2
    return mu_p, mu_t, a1, a2, b1, b2, positive


def windowed_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """fast_ssim in the inputs' dtype, its gradient by autograd (WindowedSSIM's reference)."""
    _, _, a1, a2, b1, b2, _ = ssim_parts(pred, target)
    return ((a1 * a2) / (b1 * b2)).flatten(1).mean(dim=1)


class WindowedSSIM(torch.autograd.Function):
    """windowed_ssim with its gradient in `pred` written out: with S = a1 a2 / (b1 b2) per
    pixel and g = dLoss/dS,

        dS/dmu_p = S (2 mu_t / a1 - 2 mu_t / a2 - 2 mu_p / b1 + 2 mu_p [var_p >= 0] / b2)
        dS/dpt   = S 2 / a2,    dS/dpp = -S [var_p >= 0] / b2

    and dLoss/dpred = W'(g dS/dmu_p) + 2 pred W'(g dS/dpp) + target W'(g dS/dpt), W' the
    window's adjoint: three maps go back through the window, not autograd's five, and fewer
    element-wise steps (benchmarks/bench_losses.py: 0.72x autograd's time for 608 frames,
    forward and backward)."""

    @staticmethod
    def forward(ctx, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mu_p, mu_t, a1, a2, b1, b2, positive = ssim_parts(pred, target)
        ssim_map = (a1 * a2) / (b1 * b2)
        ctx.save_for_backward(pred, target, mu_p, mu_t, a1, a2, b1, b2, positive, ssim_map)
        return ssim_map.flatten(1).mean(dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pred, target, mu_p, mu_t, a1, a2, b1, b2, positive, ssim_map = ctx.saved_tensors
        per_pixel = grad / ssim_map[0].numel()  # [N]: the mean over each frame's map
        k = ssim_map * per_pixel[:, None, None, None]  # g S
        inv_b2 = positive / b2
        d_mu = 2 * k * (mu_t / a1 - mu_t / a2 - mu_p / b1 + mu_p * inv_b2)
        d_pp = -k * inv_b2
        d_pt = 2 * k / a2
        back = window(torch.stack([d_mu, d_pp, d_pt]), transpose=True)  # [3, N, C, H, W]
        return back[0] + 2 * pred * back[1] + target * back[2], None
