"""COMPARISON.md from the runs of `python -m world_models.compare`: the table, the goals, the plot.

A run is {"dir", "results", "summary", "curves", "by_metric", "config"} read from its run
directory (world_models.runs: its results, its evaluation's summary and per-step metrics, its
config); `runs` maps a variant's name to its runs, one per seed. Every number written comes
from those files.
"""

import statistics
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from world_models import runs as run_files  # noqa: E402
from world_models.models.sampling import with_decay_steps  # noqa: E402
from world_models.plots import variant_line  # noqa: E402
from world_models.report import fmt, machine  # noqa: E402

AR_STEPS = (10, 50, 150)
COLUMNS = {"parameters": ",.0f", "fit s": ".0f", "frames/s": ".0f", "val MSE": ".3g",
           "test MSE": ".3g", "ratio to copy-last": ".2f",
           **{f"AR MSE @{s}": ".3g" for s in AR_STEPS}, "SSIM @50": ".3f",
           "action sens. dB": "+.2f"}
BASELINES = {"copy_last": "copy-last", "mean_frame": "mean-frame"}


def load_run(run_dir: Path) -> dict:
    by_metric = run_files.read_rollout_metrics(run_dir)  # metric -> strategy -> per step
    config = run_files.run_config(run_dir)
    return {"dir": run_dir, "results": run_files.read_results(run_dir),
            "summary": run_files.read_summary(run_dir),
            "curves": by_metric.get("mse", {}), "by_metric": by_metric,
            "config": {} if config is None else OmegaConf.to_container(config)}


def values(run: dict, strategy: str = "autoregressive") -> dict:
    """The table's numbers of one run; strategy copy_last or mean_frame: that baseline's."""
    res, metrics = run["results"], run["summary"]["metrics"][strategy]
    model = strategy == "autoregressive"
    test = res["test_mse"] if model else res["baselines"][strategy]
    copy_last = res["baselines"]["copy_last"]
    return {"parameters": res["parameters"] if model else None,
            "fit s": res["fit_seconds"] if model else None,
            "frames/s": res["train_frames_per_s"] if model else None,
            "val MSE": res["best_val_mse"] if model else None,
            "test MSE": test, "ratio to copy-last": test / copy_last if copy_last else None,
            **{f"AR MSE @{s}": metrics["mse"].get(f"step_{s}") for s in AR_STEPS},
            "SSIM @50": metrics["ssim"].get("step_50"),
            # the rollout's PSNR under its own actions minus another episode's (evaluate.py)
            "action sens. dB": run["summary"]["metrics"].get("action_sensitivity", {}).get(
                "psnr_gain", {}).get("mean_over_steps") if model else None}


def stats(runs: list[dict], strategy: str = "autoregressive") -> dict[str, tuple]:
    """column -> (mean, sample std or None) over the runs (seeds); (None, None) when unmeasured."""
    out = {}
    for column in COLUMNS:
        seen = [v for v in (values(r, strategy)[column] for r in runs) if v is not None]
        out[column] = (statistics.fmean(seen) if seen else None,
                       statistics.stdev(seen) if len(seen) > 1 else None)
    return out


def cell(mean_std: tuple, spec: str) -> str:
    mean, std = mean_std
    return fmt(mean, spec) + (f" ± {fmt(std, spec.lstrip(',+'))}" if std else "")


def table(rows: dict[str, dict]) -> list[str]:
    """Markdown table: one row per name of `rows` (name -> stats)."""
    lines = ["| variant | " + " | ".join(COLUMNS) + " |", "|" + " --- |" * (len(COLUMNS) + 1)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(row[c], s) for c, s in COLUMNS.items())
                     + " |")
    return lines


def verdict(ok) -> str:
    return "NOT MEASURED" if ok is None else "MET" if ok else "NOT MET"


def goals(rows: dict[str, dict], best: str) -> list[str]:
    """Issue 5's goals, each MET / NOT MET from the means over seeds (rows: name -> stats)."""
    mean = {name: {c: v[0] for c, v in row.items()} for name, row in rows.items()}
    models = {n: m for n, m in mean.items() if n not in BASELINES.values()}
    ratios = {n: m["ratio to copy-last"] for n, m in models.items()}
    low = min(ratios, key=ratios.get)
    lines = [f"- **{verdict(ratios[low] <= 0.5)}**: one-step test MSE <= 0.5x copy-last. Lowest "
             f"ratio {low} {ratios[low]:.2f}x; met by "
             f"{', '.join(n for n, r in ratios.items() if r <= 0.5) or 'none'}."]
    key = "AR MSE @150"
    copy, meanf = mean["copy-last"][key], mean["mean-frame"][key]
    ar150 = {n: m[key] for n, m in models.items() if m[key] is not None}
    if copy is None or not ar150:
        lines.append("- **NOT MEASURED**: AR MSE at step 150 below both baselines (the rollouts "
                     "are shorter than 150 steps).")
    else:
        low = min(ar150, key=ar150.get)
        met = [n for n, v in ar150.items() if v < min(copy, meanf)]
        lines.append(f"- **{verdict(bool(met))}**: AR MSE at step 150 below copy-last "
                     f"({copy:.3g}) and mean-frame ({meanf:.3g}). Lowest {low} {ar150[low]:.3g};"
                     f" met by {', '.join(met) or 'none'}.")
    pairs = [(base, with_ss) for base, with_ss in
             ((best, f"{best}+ss"), (f"{best}+noise", f"{best}+ss+noise"))
             if base in models and with_ss in models]
    if not pairs:
        lines.append("- **NOT MEASURED**: scheduled sampling lowers AR MSE@150 by >= 30% "
                     "(stage 2 was not run).")
    for base, with_ss in pairs:
        a, b = models[base], models[with_ss]
        if a[key] is None or b[key] is None:
            lines.append(f"- **NOT MEASURED**: scheduled sampling ({with_ss} against {base}) "
                         "lowers AR MSE@150 by >= 30% (rollouts shorter than 150 steps).")
            continue
        drop, worse = 1 - b[key] / a[key], b["test MSE"] / a["test MSE"] - 1
        lines.append(f"- **{verdict(drop >= 0.3 and worse <= 0.1)}**: scheduled sampling lowers "
                     f"AR MSE@150 by >= 30% with test (teacher-forced) MSE at most 10% worse: "
                     f"{with_ss} against {base}, AR MSE@150 {a[key]:.3g} -> {b[key]:.3g} "
                     f"({-drop:+.0%}), test MSE {a['test MSE']:.3g} -> {b['test MSE']:.3g} "
                     f"({worse:+.0%}).")
    return lines


def plot(path: Path, runs: dict[str, list[dict]]) -> None:
    """Per-step autoregressive MSE of every variant (mean over seeds) and the baselines, log y."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for colour, (name, seeds) in enumerate(runs.items()):
        curves = [r["curves"]["autoregressive"] for r in seeds]
        steps = min(len(c) for c in curves)
        mean = np.mean([c[:steps] for c in curves], axis=0)
        ax.plot(np.arange(1, steps + 1), mean, label=name, **variant_line(colour))
    first = next(iter(runs.values()))[0]["curves"]
    for (strategy, label), style in zip(BASELINES.items(), ("--", ":"), strict=True):
        curve = first[strategy]
        ax.plot(np.arange(1, len(curve) + 1), curve, "k" + style, label=label)
    ax.set_yscale("log")
    ax.set(xlabel="prediction step (frames after the one true frame given)",
           ylabel="MSE per frame", title="Autoregressive rollouts on the test episodes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def decay_steps(schedule: dict, steps: int) -> int:
    """The steps over which a run's linear schedule decayed (it took `steps` in all)."""
    return with_decay_steps(schedule, steps)["decay_steps"]


def header(first: dict, info: dict) -> list[str]:
    """The title and how the runs were made: machine, budget, data, seeds, time, directory."""
    data, epochs = first["summary"]["data"], first["results"]["epochs"]
    total = sum(info["walls"].values())
    return [
        f"# {info['study'].get('title', 'Variants against drift')}", "",
        f"Generated by `python -m world_models.compare` on {datetime.now():%Y-%m-%d %H:%M}.", "",
        f"- Machine: {machine()}",
        f"- Budget, the same for every run: {epochs} epoch{'s' * (epochs != 1)} = "
        f"{info['steps']:,} optimizer steps of batch {data['batch_size']} windows of "
        f"{data['seq_len']} frames; data `{data['dir']}` ({data['num_episodes']} episodes x "
        f"{data['episode_steps']} steps as collected, split {data['split']}); seeds "
        f"{', '.join(map(str, info['seeds']))}.",
        f"- Wall time: {total / 60:.1f} min for all train and evaluate processes (summed over "
        f"invocations; {info['invocation_seconds'] / 60:.1f} min in the last).",
        f"- Runs: `{info['root']}/<variant>/seed<k>/`"]


def variants(runs: dict[str, list[dict]], info: dict) -> list[str]:
    """Each variant's train.py words (the study's), and what stage 2 built on."""
    study, best = info["study"], info["best"]
    ss = next((r["config"].get("train", {}).get("scheduled_sampling") for n, s in runs.items()
               if n.endswith("+ss") for r in s[:1]), None)
    ran_stage2 = any("+" in name for name in runs)
    candidates = ", ".join(f"{v} {m:.3g}" for v, m in info["val_mse"].items())
    stage2 = "; ".join(f"+{name}: `{' '.join(words)}`"
                       for name, words in study["stage2"]["variants"].items())
    return [
        f"Every run: `{' '.join(study['train'])}`, then its variant's words:", "",
        *(f"- {v}: `{' '.join(words)}`" for v, words in study["variants"].items()), "",
        f"Stage 2 {'builds' if ran_stage2 else 'was not run; it would build'} on **{best}**, "
        "the stage-1 variant with the lowest mean best validation MSE over seeds (validation, "
        f"not test, so the test split chooses nothing): {candidates}. {stage2}. Scheduled "
        "sampling: " + (f"{ss['schedule']}, p(true frame) {ss['start']} -> {ss['end']} over "
                        f"the first {decay_steps(ss, info['steps'])} of {info['steps']} steps."
                        if ss else "not run.")]


def write(runs: dict[str, list[dict]], out: Path, info: dict) -> Path:
    """COMPARISON.md and figures/compare_ar_mse.png in `out`; returns the markdown's path.

    info: study (its file's values), root (runs directory), seeds, best (stage-1 winner),
    val_mse (candidate -> mean best validation MSE), steps (optimizer steps per run), walls
    (process -> seconds), invocation_seconds.
    """
    (out / "figures").mkdir(parents=True, exist_ok=True)
    plot(out / "figures" / "compare_ar_mse.png", runs)
    rows = {name: stats(seeds) for name, seeds in runs.items()}
    first = next(iter(runs.values()))[0]
    rows |= {label: stats([first], strategy) for strategy, label in BASELINES.items()}
    summary = first["summary"]
    md = [
        *header(first, info), "",
        "## Variants", "",
        *variants(runs, info), "",
        "## Results", "",
        *table(rows), "",
        "Mean ± sample std over seeds. fit s: training time of `trainer.fit`; frames/s: predicted "
        "frames per second of training-step time on this machine; val MSE: best validation MSE "
        "(picks the stage-2 base); test MSE: one-step (teacher-forced) MSE over the test windows, "
        f"and its ratio to copying the last frame. AR MSE @k and SSIM @50: the autoregressive "
        f"rollout's frame k over {summary['sequences']} test episode(s), horizon "
        f"{summary['horizon']}, after {summary['context']} true frame; n/a: not measured or "
        "not applicable. The copy-last and mean-frame rows are the predictors that learn "
        "nothing, on the same windows and rollouts.", "",
        "## Goals", "",
        *goals(rows, info["best"]), "",
        "## Autoregressive MSE per step", "",
        "![autoregressive MSE per step](figures/compare_ar_mse.png)", "",
        "Per-step MSE of each variant's autoregressive rollout (mean over test episodes, then "
        "over seeds; log scale) with copy-last (dashed) and mean-frame (dotted). A curve under "
        "both baselines at the right edge imagines better than a frozen or an average picture.",
        ""]
    path = out / "COMPARISON.md"
    path.write_text("\n".join(md))
    return path
