"""Tasks 1 to 3 of the course report from one command: train both cores, evaluate, write REPORT.md.

    python -m world_models.report [key=value ...]             # train builtin and scratch first
    python -m world_models.report --runs BUILTIN_RUN,SCRATCH_RUN  # or take finished train runs

key=value words go to train.py; `data`, `data.*` and `paths.data_root` also to evaluate.py
(the test split must be the one training held out), `rollout.*` and `split` to evaluate.py only.
Every number in the report is read from the runs' files (world_models.runs).
"""

import argparse
import csv
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import OmegaConf

from world_models import plots, runs
from world_models.errors import UserError, exit_on_user_error

ROOT = Path(__file__).resolve().parents[1]  # train.py and evaluate.py live here
# The runs the report trains: a study's variants and its train words (read here, not through
# studies.py, which imports this module).
COURSE = ROOT / "conf" / "study" / "course.yaml"
AR_STEPS = (1, 10, 50, 150)
# The course report's test MSE (its own data and loop), to place our numbers against.
COURSE_TEST_MSE = {"builtin": 1.11e-3, "scratch": 1.09e-3}


key_of = runs.key_of


def merge(*word_lists) -> list[str]:
    """One word per key (Hydra refuses two), the last list's winning."""
    return list({key_of(w): w for words in word_lists for w in words}.values())


def route(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split key=value words into (train.py's, evaluate.py's) by their key."""
    train, evaluate = [], []
    for word in overrides:
        if key_of(word) == "split" or key_of(word).startswith("rollout."):
            evaluate.append(word)
            continue
        train.append(word)
        if runs.is_data_word(word):
            evaluate.append(word)
    return train, evaluate


def run(script: str, args: list[str]) -> float:
    """Run `python <script> args` (output to the console); its wall time in seconds."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / script), *args])
    if proc.returncode:
        raise UserError(f"{script} {' '.join(args)} failed (exit {proc.returncode}); see above")
    return time.perf_counter() - started


def evaluate(run_dir: Path, eval_args: list[str]) -> float:
    """evaluate.py on the run's checkpoint with the data it was trained on (test split)."""
    ckpt = runs.tested_checkpoint(run_dir)
    words = [w for w in runs.run_overrides(run_dir) if runs.is_data_word(w)]
    return run("evaluate.py", [f"ckpt={ckpt}", *merge(words, eval_args),
                               f"hydra.run.dir={runs.evaluation_dir(run_dir)}"])


def epoch_losses(metrics_csv: Path) -> dict[str, tuple[list, list]]:
    """split -> (epochs counted from 1, losses) from a CSVLogger's metrics.csv."""
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    return {split: ([int(r["epoch"]) + 1 for r in rows if r.get(column)],
                    [float(r[column]) for r in rows if r.get(column)])
            for split, column in (("train", "train/loss_epoch"), ("val", "val/loss"))}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs, {device}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def fmt(value, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def table(reported: dict[str, dict]) -> list[str]:
    """The results table: one row per run, from its results and its evaluation's summary."""
    head = ["core", "parameters", "epochs", "frames/s", "test MSE", "copy-last", "mean-frame",
            "ratio to copy-last", *(f"AR MSE @{s}" for s in AR_STEPS)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in reported.values():
        res, ar = r["results"], r["summary"]["metrics"]["autoregressive"]["mse"]
        cells = [res["core"], f"{res['parameters']:,}", str(res["epochs"]),
                 f"{res['train_frames_per_s']:.0f}", fmt(res["test_mse"]),
                 fmt(res["baselines"]["copy_last"]), fmt(res["baselines"]["mean_frame"]),
                 fmt(res["ratio_to_copy_last"], ".2f"),
                 *(fmt(ar.get(f"step_{s}")) for s in AR_STEPS)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(reported: dict[str, dict], out: Path, stages: dict[str, float]) -> Path:
    """REPORT.md and figures/ in `out` from the runs' files; returns the report's path."""
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    plots.epoch_curves(figures / "loss_curves.png",
                       {name: epoch_losses(runs.metrics_csv(r["dir"]))
                        for name, r in reported.items()})
    for name, r in reported.items():
        for picture in ("rollout_grid", "rollout_loss"):
            shutil.copy(runs.evaluation_dir(r["dir"]) / f"{picture}.png",
                        figures / f"{picture}_{name}.png")
    first = next(iter(reported.values()))["summary"]
    ours = ", ".join(f"{n} {fmt(r['results']['test_mse'])}" for n, r in reported.items())
    course = ", ".join(f"{c} {v:.3g}" for c, v in COURSE_TEST_MSE.items())
    md = [
        "# World models of CarRacing: builtin against scratch LSTM", "",
        f"Generated by `python -m world_models.report` on {datetime.now():%Y-%m-%d %H:%M}.", "",
        f"- Machine: {machine()}",
        *(f"- Wall time, {stage}: {seconds:.0f} s" for stage, seconds in stages.items()),
        f"- Wall time, all stages: {sum(stages.values()):.0f} s",
        *(f"- Run `{name}`: `{r['dir']}` (data `{r['results']['data_dir']}`)"
          for name, r in reported.items()), "",
        "## Tasks 1 and 2: test MSE of both cores against predictors that learn nothing", "",
        *table(reported), "",
        "Test MSE is over frames 1..L-1 of every test window (teacher forcing); copy-last and "
        "mean-frame are the baselines on the same windows; AR MSE @k is the autoregressive "
        f"rollout's MSE of frame k over {first['sequences']} test episode(s), horizon "
        f"{first['horizon']}, after {first['context']} true frame(s) (n/a: beyond the horizon).",
        "",
        f"Here the test MSE is {ours}; the course report measured {course} on its own data "
        "(and, for Task 1 and 2, its per-step loop: `experiment=task1`, `task2`).", "",
        "![loss curves](figures/loss_curves.png)", "",
        "Loss per epoch, both cores overlaid: solid training, dashed validation (log scale; "
        "equal curves lie on each other, the wider underneath); a widening gap is overfitting.",
        "",
        "## Task 3: teacher forcing against autoregressive rollouts", "",
    ]
    for name in reported:
        md += [f"### {name}", "",
               f"![rollout grid {name}](figures/rollout_grid_{name}.png)", "",
               "Rows: the true frames, teacher forcing, the autoregressive rollout and its error; "
               "columns: prediction steps. Drift shows as the error row turning yellow.", "",
               f"![per-step loss {name}](figures/rollout_loss_{name}.png)", "",
               "Per-step MSE (log scale) of each strategy: where the autoregressive curve leaves "
               "teacher forcing and crosses copy-last is how far the model can imagine.", ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(md))
    return path


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # One word per --runs (comma-separated, or repeated): a list flag would swallow key=value.
    parser.add_argument("--runs", action="append", metavar="DIR[,DIR...]",
                        help="finished train.py run directories (default: train model=builtin "
                        "and model=scratch first)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="report directory")
    parser.add_argument("--log-dir", type=Path, default=Path("outputs"),
                        help="new runs go to LOG_DIR/report/<time>/<core>")
    parser.add_argument("overrides", nargs="*", help="key=value words for train.py/evaluate.py")
    args = parser.parse_args(argv)
    train_args, eval_args = route(args.overrides)
    stages, run_dirs = {}, {}
    if args.runs:
        if ignored := [w for w in train_args if not runs.is_data_word(w)]:
            raise UserError(f"--runs: the runs are trained already; drop {' '.join(ignored)}")
        for run_dir in (Path(d) for word in args.runs for d in word.split(",") if d):
            results = runs.read_results(run_dir)
            name = results["core"] if results["core"] not in run_dirs else run_dir.name
            run_dirs[name] = run_dir
            stages[f"train {name} (fit, from its {runs.RESULTS})"] = results["fit_seconds"]
    else:
        root = args.log_dir / "report" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
        course = OmegaConf.to_container(OmegaConf.load(COURSE))
        for name, words in course["variants"].items():  # the command line's words win
            run_dirs[name] = root / name
            stages[f"train {name}"] = run("train.py", merge(
                words, course["train"], train_args, [f"hydra.run.dir={run_dirs[name]}"]))
    for name, run_dir in run_dirs.items():
        stages[f"evaluate {name}"] = evaluate(run_dir, eval_args)
    found = {name: {"dir": d, "results": runs.read_results(d), "summary": runs.read_summary(d)}
             for name, d in run_dirs.items()}
    started = time.perf_counter()
    path = write_report(found, args.out, stages)
    print(f"report: {path} ({time.perf_counter() - started:.1f} s to write)")


if __name__ == "__main__":
    main()
