"""The page of a study scored as forecasts (a study with ``page: forecasts``, e.g.
conf/study/stochastic.yaml): deterministic and stochastic variants, each evaluated with
rollout.samples=K, held to the sampled-dreams goals.

A variant's forecast is its ``sampled`` ensemble (K rollouts, z from the prior) if its model
has a latent, else its ``deterministic`` one (its one rollout). The goals, per variant, from the
means over the test episodes and the seeds, at every step of the rollout:
 1. best-of-K MSE below both baselines' MSE (copy the first frame, the mean training frame);
 2. energy score below every reference's: the climatology ensemble, the variant's own rollout
    with z at the prior's mean (stochastic variants), and every deterministic variant of the
    study but itself;
 3. the samples' sharpness at least SHARP of the truth's, and their road IoU above the mean
    frame's;
 4. one-step (teacher-forced) test MSE at most ONE_STEP_RATIO x the study's `reference`
    variant's (the deterministic default).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from world_models.errors import UserError  # noqa: E402
from world_models.metrics import step_ranges  # noqa: E402
from world_models.report import fmt  # noqa: E402
from world_models.studies import mean_curves, page_header, run_words  # noqa: E402

SHARP = 0.8  # goal 3
ONE_STEP_RATIO = 1.5  # goal 4
QUOTED_STEPS = (10, 50, 150)
# label -> (strategy in the runs' files, colour, line style) of the figure's references
REFERENCES = {"climatology": ("climatology", "0.55", "-"),
              "copy-first": ("copy_last", "k", "--"),
              "mean frame": ("mean_frame", "k", ":")}


def forecast_of(seeds: list[dict]) -> str:
    """The strategy of a variant's own forecast: sampled (a latent) or deterministic."""
    by_metric = seeds[0]["by_metric"]
    if "energy" not in by_metric:
        raise UserError(f"{seeds[0]['dir']}: evaluated without forecasts; the study's "
                        f"evaluate words need rollout.samples=K (K >= 2)")
    return "sampled" if "sampled" in by_metric["energy"] else "deterministic"


def samples_of(seeds: list[dict]) -> int:
    return int((seeds[0]["summary"].get("forecast") or {}).get("samples", 0))


def curve(seeds: list[dict], metric: str, strategy: str) -> np.ndarray | None:
    return mean_curves(seeds, metric).get(strategy)


def missed(bad: np.ndarray, label: str) -> list[str]:
    """['<label> at n steps (ranges)'] for the steps where `bad` [T] holds; [] if none."""
    steps = (np.flatnonzero(bad) + 1).tolist()
    return [f"{label} at {len(steps)} steps ({step_ranges(steps)})"] if steps else []


def below(ours: np.ndarray, theirs: np.ndarray, label: str) -> list[str]:
    """missed() where ours is not strictly below theirs (over their common steps)."""
    steps = min(len(ours), len(theirs))
    return missed(~(ours[:steps] < theirs[:steps]), label)


def verdict(misses: list[str], steps: int) -> tuple[bool, str]:
    return (not misses, "; ".join(misses) or f"every step 1-{steps}")


def energy_references(name: str, runs: dict[str, list[dict]]) -> dict[str, np.ndarray]:
    """label -> energy curve that variant `name`'s forecast must beat (goal 2)."""
    seeds = runs[name]
    refs = {"climatology": curve(seeds, "energy", "climatology")}
    if forecast_of(seeds) == "sampled":
        refs["its z-at-mean rollout"] = curve(seeds, "energy", "deterministic")
    for other, theirs in runs.items():
        if other != name and forecast_of(theirs) == "deterministic":
            refs[other] = curve(theirs, "energy", "deterministic")
    return refs


def one_step_ratio(seeds: list[dict], reference: list[dict]) -> float:
    ours = np.mean([r["results"]["test_mse"] for r in seeds])
    return float(ours / np.mean([r["results"]["test_mse"] for r in reference]))


def verdicts(name: str, runs: dict[str, list[dict]], reference: str) -> dict:
    """goal -> (met, how it was measured) for variant `name` of `runs`."""
    seeds = runs[name]
    own, k = forecast_of(seeds), samples_of(seeds)
    best = curve(seeds, "best_mse", own)
    steps = len(best)
    goal1 = [m for base, label in (("copy_last", "MSE >= copy-first"),
                                   ("mean_frame", "MSE >= mean-frame"))
             for m in below(best, curve(seeds, "mse", base), label)]
    goal2 = [m for label, ref in energy_references(name, runs).items()
             for m in below(curve(seeds, "energy", own), ref, f"energy >= {label}")]
    goal3 = missed(curve(seeds, "sharpness", own) < SHARP, f"sharpness < {SHARP}") + below(
        curve(seeds, "road_iou", "mean_frame"), curve(seeds, "road_iou", own),
        "road IoU <= mean-frame's")
    ratio = one_step_ratio(seeds, runs[reference])
    return {f"1. best-of-{k} MSE below copy-first and mean-frame": verdict(goal1, steps),
            "2. energy below the deterministic model's and climatology's": verdict(goal2, steps),
            f"3. samples' sharpness >= {SHARP}, road IoU above mean-frame's": verdict(goal3,
                                                                                       steps),
            f"4. one-step MSE <= {ONE_STEP_RATIO}x {reference}'s": (
                ratio <= ONE_STEP_RATIO, f"{ratio:.2f}x")}


def at(values: np.ndarray | None, step: int) -> float | None:
    return None if values is None or len(values) < step else float(values[step - 1])


def results_table(runs: dict[str, list[dict]], reference: str) -> list[str]:
    """One row per variant (its own forecast), then the reference ensembles and baselines."""
    head = ["variant", "forecast", "test MSE", f"/ {reference}",
            *(f"best-of-K MSE @{s}" for s in QUOTED_STEPS),
            *(f"energy @{s}" for s in QUOTED_STEPS), "energy mean",
            "sharpness @50", "road IoU @50"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]

    def row(label, seeds, strategy, mse_metric, extra):
        e = curve(seeds, "energy", strategy)
        cells = [label, *extra,
                 *(fmt(at(curve(seeds, mse_metric, strategy), s), ".4f") for s in QUOTED_STEPS),
                 *(fmt(at(e, s), ".3f") for s in QUOTED_STEPS),
                 fmt(None if e is None else float(e.mean()), ".3f"),
                 fmt(at(curve(seeds, "sharpness", strategy), 50), ".2f"),
                 fmt(at(curve(seeds, "road_iou", strategy), 50), ".3f")]
        lines.append("| " + " | ".join(cells) + " |")

    for name, seeds in runs.items():
        test = np.mean([r["results"]["test_mse"] for r in seeds])
        own = forecast_of(seeds)
        row(name, seeds, own, "best_mse", [f"{own} (K={samples_of(seeds)})", fmt(test),
                                           fmt(one_step_ratio(seeds, runs[reference]), ".2f")])
    ref = runs[reference]
    row("climatology", ref, "climatology", "best_mse", ["K random training frames", "", ""])
    for label, (strategy, _, _) in list(REFERENCES.items())[1:]:
        row(label, ref, strategy, "mse", ["one frame", "", ""])
    return lines


def plot(path: Path, runs: dict[str, list[dict]], reference: str) -> None:
    """Energy score, best-of-K MSE, sharpness and road IoU per step: every variant's forecast
    (a stochastic one's z-at-mean rollout thin dashed), and the references in grey/black."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), dpi=100)
    panels = (("energy", "energy", "energy score (lower is better)", True),
              ("best_mse", "mse", "best-of-K MSE (log)", True),
              ("sharpness", "sharpness", "sharpness of the samples", False),
              ("road_iou", "road_iou", "road IoU of the samples", False))
    for ax, (metric, base_metric, title, log) in zip(axes.flat, panels, strict=True):
        for colour, (name, seeds) in enumerate(runs.items()):
            own = forecast_of(seeds)
            _line(ax, curve(seeds, metric, own), f"C{colour % 10}", "-", f"{name} ({own})")
            if own == "sampled":
                _line(ax, curve(seeds, metric, "deterministic"), f"C{colour % 10}", "--",
                      f"{name}, z at the prior's mean", width=0.8)
        ref = runs[reference]
        for label, (strategy, colour, style) in REFERENCES.items():
            name = metric if strategy == "climatology" else base_metric
            _line(ax, curve(ref, name, strategy), colour, style, label)
        if metric == "sharpness":
            ax.axhline(SHARP, color="r", lw=0.8, alpha=0.6, label=f"goal: {SHARP}")
        if log:
            ax.set_yscale("log")
        ax.set(xlabel="prediction step", title=title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _line(ax, values, colour, style, label, width=1.5) -> None:
    if values is not None:
        ax.plot(np.arange(1, len(values) + 1), values, color=colour, ls=style, lw=width,
                label=label)


def write(name: str, study: dict, runs: dict[str, list[dict]], out: Path, info: dict) -> Path:
    """OUT/COMPARISON_<name>.md and its figure, from the runs' files."""
    reference = study["reference"]
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figure = f"figures/{name}_forecasts.png"
    plot(out / figure, runs, reference)
    summary = runs[reference][0]["summary"]
    md = [*page_header(name, study, runs, info,
                       f"Evaluation: `{' '.join(study['evaluate'])}`: {summary['sequences']} "
                       f"test episodes, {summary['horizon']} steps after {summary['context']} "
                       f"true frame; K={samples_of(runs[reference])} samples per episode."),
          *(f"- **{v}**: {run_words(words)}"
            for v, words in study["variants"].items()), "", "## Results", "",
          *results_table(runs, reference), "",
          "Forecast: a stochastic variant's K rollouts with z drawn from its prior, a "
          "deterministic variant's one rollout (as K copies). Best-of-K MSE: the sample "
          "nearest the truth, per step; energy: the energy score (mean distance of the samples "
          "to the truth minus half their mean distance to each other; lower is better; for one "
          "frame, its distance). Sharpness and road IoU: of each sample, averaged. Mean over "
          "the test episodes and seeds.", "", "## Goals", ""]
    for variant in runs:
        md.append(f"**{variant}**")
        md += [f"- {goal}: **{'MET' if met else 'NOT MET'}** ({how})"
               for goal, (met, how) in verdicts(variant, runs, reference).items()]
        md.append("")
    md += [f"![forecast metrics per step]({figure})", "",
           "Per step, mean over test episodes: every variant's forecast (solid; a stochastic "
           "variant's z-at-mean rollout dashed), climatology (grey), copy-first (dashed black) "
           "and the mean frame (dotted black).", ""]
    path = out / f"COMPARISON_{name}.md"
    path.write_text("\n".join(md))
    return path
