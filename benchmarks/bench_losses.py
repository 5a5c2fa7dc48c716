"""The open-loop step's cheaper parts against what they replaced, side by side.

`python benchmarks/bench_losses.py` times, forward and backward, on seeded random frames of a
default training window (16 x 150 frames of 3 x 32 x 32):

  (a) the SSIM term on a step's quarter of the frames (608): WindowedSSIM's written-out
      gradient (fast_ssim, what training uses) against autograd through windowed_ssim;
  (b) MSE plus the -PSNR/10 term of 2,400 frames: both from one set of squared errors (the
      objective) against F.mse_loss and a second pass of squares, as before 2026-11-30;
  (c) the flow warp's grid and resampling at batch 16 (one rollout step) and 2,400 frames
      (a teacher-forced window): its fixed upsampling matrix against F.interpolate, a permute
      and the identity grid's add.

Median CPU time of this thread over interleaved repetitions, one thread. Each pair computes
the same values (tests/test_open_loop.py, tests/test_model_options.py hold them equal).
"""

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from world_models.metrics import QUANTISATION_MSE  # noqa: E402
from world_models.models.losses import fast_ssim, objective, windowed_ssim  # noqa: E402
from world_models.models.warps import FlowWarp, _resample  # noqa: E402

REPEATS = 15


def cpu_ms(work) -> float:
    started = time.thread_time()
    work()
    return 1e3 * (time.thread_time() - started)


def compare(pairs: dict) -> dict[str, float]:
    """Median CPU ms of each callable, the pairs interleaved so they see the same machine."""
    for work in pairs.values():
        work()  # warm-up
    times = {name: [] for name in pairs}
    for _ in range(REPEATS):
        for name, work in pairs.items():
            times[name].append(cpu_ms(work))
    return {name: statistics.median(t) for name, t in times.items()}


def backward_of(loss_of, frames):
    def work():
        frames.grad = None
        loss_of(frames).backward()
    return work


def two_pass_objective(pred, true, log_mse_weight=2e-4):
    per_frame = (pred - true).pow(2).flatten(2).mean(-1)
    return F.mse_loss(pred, true) + log_mse_weight * torch.log10(
        per_frame + QUANTISATION_MSE).mean()


def interpolated_grid(warp: FlowWarp, hidden, frames):
    B, T = hidden.shape[:2]
    flow = warp.head(hidden).reshape(B * T, 2, *warp.coarse)
    flow = F.interpolate(flow, size=warp.frame_shape[1:], mode="bilinear", align_corners=False)
    identity = warp.identity.view(1, *warp.frame_shape[1:], 2)
    return _resample(frames.flatten(0, 1), identity + flow.permute(0, 2, 3, 1))


def main() -> None:
    torch.set_num_threads(1)
    print(f"bench_losses: torch {torch.__version__}, 1 thread, CPU time, median of {REPEATS}, "
          f"load average {os.getloadavg()[0]:.1f}")
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(16, 150, 3, 32, 32, generator=g)
    pred = (truth + 0.1 * torch.randn(truth.shape, generator=g)).requires_grad_()
    quarter = truth[:, ::4].flatten(0, 1)  # [608, 3, 32, 32]
    some = pred.detach()[:, ::4].flatten(0, 1).clone().requires_grad_()

    ssim = compare({"written out": backward_of(lambda p: fast_ssim(p, quarter).mean(), some),
                    "autograd": backward_of(lambda p: windowed_ssim(p, quarter).mean(), some)})
    print(f"(a) SSIM of {len(quarter)} frames, forward and backward: written-out gradient "
          f"{ssim['written out']:.1f} ms, autograd {ssim['autograd']:.1f} ms: "
          f"{ssim['written out'] / ssim['autograd']:.2f}x the time")

    mse = compare({"one pass": backward_of(
                       lambda p: objective(p, truth, log_mse_weight=2e-4), pred),
                   "two passes": backward_of(lambda p: two_pass_objective(p, truth), pred)})
    print(f"(b) MSE + log-MSE of {truth.shape[0] * truth.shape[1]:,} frames, forward and "
          f"backward: one set of squares {mse['one pass']:.1f} ms, two {mse['two passes']:.1f} "
          f"ms: {mse['one pass'] / mse['two passes']:.2f}x the time")

    torch.manual_seed(0)
    warp = FlowWarp((3, 32, 32), hidden_size=128)
    with torch.no_grad():
        warp.head.weight.normal_(0, 0.05, generator=g)
    for B, T in ((16, 1), (16, 150)):
        hidden = torch.randn(B, T, 128, generator=g, requires_grad=True)
        frames = torch.rand(B, T, 3, 32, 32, generator=g)
        grad = torch.randn(B * T, 3, 32, 32, generator=g)

        def step(grid_of, hidden=hidden, frames=frames, grad=grad):
            def work():
                hidden.grad = None
                grid_of(hidden, frames).reshape(grad.shape).backward(grad)
            return work

        flow = compare({"matrix": step(warp), "interpolate": step(
            lambda h, f: interpolated_grid(warp, h, f))})
        print(f"(c) flow warp of {B * T:,} frames, forward and backward: fixed upsampling matrix "
              f"{flow['matrix']:.2f} ms, F.interpolate {flow['interpolate']:.2f} ms: "
              f"{flow['matrix'] / flow['interpolate']:.2f}x the time")


if __name__ == "__main__":
    main()
