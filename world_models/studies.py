"""A study from conf/study/NAME.yaml: variants trained and evaluated side by side, and a markdown
page that holds each to the open-loop goals. ``make compare STUDY=NAME`` runs one.

A study file names its variants (name -> train.py words), the seeds, the budget words given to
every training run (a variant's words and the command line's override them) and the words given
to every evaluation. A user adds a variant by adding a line. Runs go to DIR/<variant>/seed<k>/,
and finished ones are skipped. A study with a `stage2` (conf/study/drift.yaml, the default of
make compare) then adds words to its best candidate, and is written up by comparison.py.

The goals (per variant, from the means over seeds and test episodes):
 1. autoregressive MSE at every step at most both baselines' (copy the first frame, the mean
    training frame);
 2. SSIM at every step at least the mean frame's, PSNR at every step at least both baselines';
 3. one-step (teacher-forced) test MSE at most 0.2x copy-last.
"""

from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from world_models.errors import UserError  # noqa: E402
from world_models.metrics import step_ranges  # noqa: E402
from world_models.plots import variant_line  # noqa: E402
from world_models.report import fmt, machine  # noqa: E402

STUDY_DIR = Path(__file__).resolve().parents[1] / "conf" / "study"
KEYS = ("title", "about", "seeds", "train", "evaluate", "variants", "stage2", "page",
        "reference")
# page: how the study is written up: open_loop (this module's goals) or forecasts
# (forecast_study.py's, which also needs `reference`: the variant goal 4 compares with)
PAGES = ("open_loop", "forecasts")
QUOTED_STEPS = (10, 50, 150)
ONE_STEP_RATIO = 0.2  # goal 3


def load_study(name: str) -> dict:
    """conf/study/<name>.yaml as plain values, checked."""
    path = STUDY_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in STUDY_DIR.glob("*.yaml")))
        raise UserError(f"--study: no '{path}'; available: {known}")
    study = OmegaConf.to_container(OmegaConf.load(path))
    unknown = sorted(set(study) - set(KEYS))
    if unknown:
        raise UserError(f"{path}: unknown key '{unknown[0]}'; expected {', '.join(KEYS)}")
    check_variants(path, "variants", study.get("variants"))
    if "stage2" in study:
        check_stage2(path, study)
    check_page(path, study)
    study.setdefault("seeds", [0])
    study.setdefault("train", [])
    study.setdefault("evaluate", [])
    return study


def check_variants(path: Path, where: str, variants) -> None:
    if not isinstance(variants, dict) or not variants:
        raise UserError(f"{path}: '{where}' must map names to lists of train.py words")
    for variant, words in variants.items():
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise UserError(f"{path}: {where}.{variant}: expected a list of key=value words")


def check_page(path: Path, study: dict) -> None:
    page = study.setdefault("page", "open_loop")
    if page not in PAGES:
        raise UserError(f"{path}: page: expected one of {', '.join(PAGES)}, got '{page}'")
    if page == "forecasts" and study.get("reference") not in study["variants"]:
        raise UserError(f"{path}: reference: expected the name of a variant (the "
                        f"deterministic default), got '{study.get('reference')}'")


def check_stage2(path: Path, study: dict) -> None:
    """stage2: {candidates: variant names, variants: name -> words added to the best's}."""
    stage2 = study["stage2"]
    if not isinstance(stage2, dict) or sorted(stage2) != ["candidates", "variants"]:
        raise UserError(f"{path}: stage2: expected the keys candidates and variants")
    unknown = [c for c in stage2["candidates"] or [] if c not in study["variants"]]
    if unknown or not stage2["candidates"]:
        raise UserError(f"{path}: stage2.candidates: expected names of variants, got "
                        f"{stage2['candidates']}")
    check_variants(path, "stage2.variants", stage2["variants"])


def curves(run: dict, metric: str) -> dict[str, np.ndarray]:
    """strategy -> per-step mean of `metric` of one run."""
    return {s: np.asarray(v) for s, v in run["by_metric"].get(metric, {}).items()}


def mean_curves(seeds: list[dict], metric: str) -> dict[str, np.ndarray]:
    """strategy -> per-step mean of `metric`, averaged over the seeds (shortest horizon)."""
    per_seed = [curves(r, metric) for r in seeds]
    steps = min(len(c) for c in per_seed for c in c.values())
    return {s: np.mean([c[s][:steps] for c in per_seed], axis=0) for s in per_seed[0]}


def worse_steps(seeds: list[dict]) -> dict[str, list[int]]:
    """The steps where the rollout misses goals 1 and 2, per check."""
    mse, psnr, ssim = (mean_curves(seeds, m) for m in ("mse", "psnr", "ssim"))
    ar = "autoregressive"
    checks = {
        "MSE > copy-first": mse[ar] > mse["copy_last"],
        "MSE > mean-frame": mse[ar] > mse["mean_frame"],
        "PSNR < copy-first": psnr[ar] < psnr["copy_last"],
        "PSNR < mean-frame": psnr[ar] < psnr["mean_frame"],
        "SSIM < mean-frame": ssim[ar] < ssim["mean_frame"],
    }
    return {name: (np.flatnonzero(bad) + 1).tolist() for name, bad in checks.items()}


def verdicts(seeds: list[dict]) -> dict[str, tuple[bool, str]]:
    """goal -> (met, how it was measured) for one variant: met on the mean over its seeds,
    and with more than one seed, in how many of them it is met one by one (a mean can hide a
    seed that misses; `make train` runs one)."""
    goals = mean_verdicts(seeds)
    if len(seeds) == 1:
        return goals
    each = [mean_verdicts([run]) for run in seeds]
    for goal, (met, how) in goals.items():
        missed = [Path(run["dir"]).name
                  for run, one in zip(seeds, each, strict=True) if not one[goal][0]]
        count = f"seed by seed: {len(seeds) - len(missed)} of {len(seeds)}"
        goals[goal] = (met, f"{how}; {count}" + (f", not {', '.join(missed)}" if missed else ""))
    return goals


def mean_verdicts(seeds: list[dict]) -> dict[str, tuple[bool, str]]:
    """goal -> (met, how it was measured) on the mean curves of `seeds`."""
    worse = worse_steps(seeds)
    horizon = len(mean_curves(seeds, "mse")["autoregressive"])

    def missed(*names):
        parts = [f"{n} at {len(worse[n])} steps ({step_ranges(worse[n])})"
                 for n in names if worse[n]]
        return (not parts, "; ".join(parts) or f"every step 1-{horizon}")

    ratios = [r["results"]["test_mse"] / r["results"]["baselines"]["copy_last"] for r in seeds]
    ratio = float(np.mean(ratios))
    return {"1. AR MSE <= both baselines": missed("MSE > copy-first", "MSE > mean-frame"),
            "2. SSIM >= mean-frame, PSNR >= both": missed("PSNR < copy-first",
                                                          "PSNR < mean-frame",
                                                          "SSIM < mean-frame"),
            f"3. one-step MSE <= {ONE_STEP_RATIO}x copy-last": (ratio <= ONE_STEP_RATIO,
                                                                 f"{ratio:.3f}x")}


def sensitivity(seeds: list[dict]) -> float | None:
    """Mean over steps and seeds of the PSNR gain under the true actions (evaluate.py)."""
    gains = [r["summary"].get("metrics", {}).get("action_sensitivity", {}).get("psnr_gain", {})
             .get("mean_over_steps") for r in seeds]
    gains = [g for g in gains if g is not None]
    return float(np.mean(gains)) if gains else None


def results_table(runs: dict[str, list[dict]]) -> list[str]:
    head = ["variant", "test MSE", "/ copy-last", "frames/s", "fit s",
            *(f"AR MSE @{s}" for s in QUOTED_STEPS), "SSIM @50", "road IoU @50", "sharpness @50",
            "action sens. dB"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]

    def at(seeds, metric, step, strategy="autoregressive"):
        curve = mean_curves(seeds, metric).get(strategy)
        return None if curve is None or len(curve) < step else float(curve[step - 1])

    for name, seeds in runs.items():
        res = [r["results"] for r in seeds]
        test = np.mean([r["test_mse"] for r in res])
        copy = np.mean([r["baselines"]["copy_last"] for r in res])
        cells = [name, fmt(test), fmt(test / copy, ".3f"),
                 fmt(np.mean([r["train_frames_per_s"] for r in res]), ",.0f"),
                 fmt(np.mean([r["fit_seconds"] for r in res]), ".0f"),
                 *(fmt(at(seeds, "mse", s), ".4f") for s in QUOTED_STEPS),
                 fmt(at(seeds, "ssim", 50), ".3f"), fmt(at(seeds, "road_iou", 50), ".3f"),
                 fmt(at(seeds, "sharpness", 50), ".2f"), fmt(sensitivity(seeds), "+.2f")]
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(runs.values()))
    for strategy, label in (("copy_last", "copy the first frame"),
                            ("mean_frame", "mean training frame")):
        cells = [label, "", "", "", "", *(fmt(at(first, "mse", s, strategy), ".4f")
                                          for s in QUOTED_STEPS),
                 fmt(at(first, "ssim", 50, strategy), ".3f"),
                 fmt(at(first, "road_iou", 50, strategy), ".3f"),
                 fmt(at(first, "sharpness", 50, strategy), ".2f"), ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_metrics(path: Path, runs: dict[str, list[dict]]) -> None:
    """AR MSE, road IoU and sharpness per step of every variant, with both baselines."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), dpi=100)
    first = next(iter(runs.values()))
    for ax, metric, log in zip(axes, ("mse", "road_iou", "sharpness"), (True, False, False),
                               strict=True):
        for colour, (name, seeds) in enumerate(runs.items()):
            curve = mean_curves(seeds, metric)["autoregressive"]
            ax.plot(np.arange(1, len(curve) + 1), curve, label=name, **variant_line(colour))
        for strategy, style, label in (("copy_last", "--", "copy first frame"),
                                       ("mean_frame", ":", "mean frame")):
            curve = mean_curves(first, metric)[strategy]
            ax.plot(np.arange(1, len(curve) + 1), curve, "k" + style, label=label)
        if log:
            ax.set_yscale("log")
        ax.set(xlabel="prediction step", title=f"autoregressive {metric}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fit_minutes(runs: dict[str, list[dict]]) -> float:
    return sum(r["results"]["fit_seconds"] for seeds in runs.values() for r in seeds) / 60


def data_dirs(runs: dict[str, list[dict]]) -> str:
    """The datasets the runs were evaluated on: one, or each with its variants."""
    dirs: dict[str, list[str]] = {}
    for variant, seeds in runs.items():
        dirs.setdefault(seeds[0]["summary"]["data"]["dir"], []).append(variant)
    if len(dirs) == 1:
        return f"`{next(iter(dirs))}`"
    return "; ".join(f"`{d}` ({', '.join(vs)})" for d, vs in dirs.items())


def run_words(words: list[str]) -> str:
    """A study's or a variant's override words in code font, or "the defaults" if none."""
    return f"`{' '.join(words)}`" if words else "the defaults"


def page_header(name: str, study: dict, runs: dict[str, list[dict]], info: dict,
                evaluation: str) -> list[str]:
    """A study page's lines up to its variants: title, about, machine, settings, the
    `evaluation` line, time; then the "Variants" heading."""
    return [f"# {study.get('title', name)}", "",
            f"Generated by `make compare STUDY={name}` on {datetime.now():%Y-%m-%d %H:%M}.", "",
            study.get("about", "").strip(), "",
            f"- Machine: {machine()}",
            f"- Every run: {run_words(study['train'])} and its variant's words; seeds "
            f"{', '.join(map(str, study['seeds']))}; data {data_dirs(runs)}.",
            f"- {evaluation}",
            f"- Time: {fit_minutes(runs):.1f} min of `trainer.fit` over all runs (from their "
            f"results), {sum(info['walls'].values()) / 60:.1f} min of the train and evaluate "
            f"processes this study started itself (finished runs are skipped). Runs: "
            f"`{info['root']}/<variant>/seed<k>/`.", "", "## Variants", ""]


def write(name: str, study: dict, runs: dict[str, list[dict]], out: Path, info: dict) -> Path:
    """OUT/COMPARISON_<name>.md and its figure, from the runs' files."""
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figure = f"figures/{name}_per_step.png"
    plot_metrics(out / figure, runs)
    summary = next(iter(runs.values()))[0]["summary"]
    md = [*page_header(name, study, runs, info,
                       f"Rollouts: {summary['sequences']} test episodes, {summary['horizon']} "
                       f"steps after {summary['context']} true frame; copy-first repeats that "
                       f"frame."),
          *(f"- **{v}**: {run_words(words)}"
            for v, words in study["variants"].items()), "",
          "## Results", "", *results_table(runs), "",
          "Test MSE: one-step (teacher-forced) over the test windows; AR: the open-loop rollout, "
          "mean over test episodes and seeds. Road IoU: the road pixels of a prediction against "
          "the truth's; sharpness: the prediction's squared spatial gradients over the truth's "
          "(1 = as detailed); action sens.: the rollout's PSNR under the true actions minus "
          "under another test episode's, averaged over the steps (0: the actions are ignored).",
          "",
          "## Goals", ""]
    for variant, seeds in runs.items():
        md.append(f"**{variant}**")
        md += [f"- {goal}: **{'MET' if met else 'NOT MET'}** ({how})"
               for goal, (met, how) in verdicts(seeds).items()]
        md.append("")
    md += [f"![per-step metrics]({figure})", "",
           "Per step, mean over test episodes: autoregressive MSE (log), road IoU and "
           "sharpness of every variant, copy-first (dashed) and mean-frame (dotted).", ""]
    path = out / f"COMPARISON_{name}.md"
    path.write_text("\n".join(md))
    return path
