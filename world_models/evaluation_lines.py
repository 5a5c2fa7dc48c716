"""The lines evaluate.py prints: the per-strategy table, where the rollout is worse than a
baseline, and how much it follows its actions."""

from world_models.metrics import step_ranges

STRATEGIES = ("teacher_forcing", "autoregressive", "copy_last", "mean_frame")
SUMMARY_STEPS = (1, 10, 50, 150)  # the steps a summary quotes

def format_worse(worse: dict, horizon: int) -> str:
    """One line: in which metrics the rollout is never worse than copying the first frame or
    the mean frame over the horizon, and where it is, in the others."""
    parts, never = [], []
    for metric, by_baseline in worse.items():
        bad = [(baseline, steps) for baseline, steps in by_baseline.items() if steps]
        never += [] if bad else [metric]
        parts += [f"{metric} than {baseline} at {len(steps)} steps ({step_ranges(steps)})"
                  for baseline, steps in bad]
    line = (f"never worse than copy-last or the mean frame over {horizon} steps in "
            f"{', '.join(never)}" if never else "")
    if parts:
        line += ("; " if line else "") + "worse in " + "; ".join(parts)
    return "autoregressive: " + line


def format_sensitivity(entry: dict | None) -> str:
    """One line: how much better the rollout is under its own actions than another episode's."""
    if entry is None:
        return "action sensitivity: not measured (needs two episodes to swap actions between)"
    gain = entry["psnr_gain"]
    steps = ", ".join(f"step {k[5:]} {v:+.2f}" for k, v in gain.items() if k.startswith("step_"))
    return (f"action sensitivity (PSNR under the true actions minus another episode's): "
            f"{gain['mean_over_steps']:+.2f} dB over the steps ({steps})")


def format_summary(summary: dict, horizon: int) -> str:
    """A table: MSE at the first and the last quoted step, and every metric averaged over steps."""
    last = f"step_{max(s for s in SUMMARY_STEPS if s <= horizon)}"
    columns = {"MSE@1": ("mse", "step_1"), f"MSE@{last[5:]}": ("mse", last),
               "MSE mean": ("mse", "mean_over_steps"), "PSNR mean": ("psnr", "mean_over_steps"),
               "SSIM mean": ("ssim", "mean_over_steps")}
    lines = [f"{'strategy':<16}" + "".join(f"{c:>11}" for c in columns)]
    for strategy, metrics in summary.items():
        if strategy not in STRATEGIES:  # action_sensitivity has its own line
            continue
        values = [metrics[metric][key] for metric, key in columns.values()]
        lines.append(f"{strategy:<16}" + "".join(
            f"{'inf' if v is None else f'{v:.4g}':>11}" for v in values))
    return "\n".join(lines)
