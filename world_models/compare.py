"""Train a study's variants over seeds, evaluate them, write its comparison page.

    python -m world_models.compare [--study NAME] [--seeds 0,1] [--out reports] [--dir DIR]
                                   [--stage1-only] [key=value ...]

The variants are conf/study/NAME.yaml's (default: drift, the Task 4 study). A study with a
`stage2` then adds each of its stage-2 word lists to the candidate with the lowest mean
VALIDATION MSE, so that the test split chooses nothing, and writes COMPARISON.md
(comparison.py); any other writes COMPARISON_NAME.md (studies.py, or forecast_study.py for a
study with `page: forecasts`). Runs go to
DIR/<variant>/seed<k>/ (default DIR: outputs/compare/<time>); one already trained and
evaluated is skipped, so the same --dir continues an interrupted comparison. key=value words
are routed as by world_models.report (data* to both scripts, rollout.* and split to evaluate.py
only) and override the study's and the variants' own.
"""

import argparse
import json
import shutil
import statistics
import time
from datetime import datetime
from pathlib import Path

from world_models import comparison, forecast_study, studies
from world_models import runs as run_files
from world_models.errors import UserError, exit_on_user_error
from world_models.report import evaluate, key_of, merge, route, run

DEFAULT_STUDY = "drift"


def stage2(study: dict, best: str) -> dict[str, list[str]]:
    """<best>+<name>: the best candidate's words and each of the study's stage-2 lists."""
    words = study["variants"][best]
    return {f"{best}+{name}": merge(words, extra)
            for name, extra in study["stage2"]["variants"].items()}


def mean_val_mse(runs: list[dict]) -> float:
    values = [v for v in (r["results"]["best_val_mse"] for r in runs) if v is not None]
    return statistics.fmean(values) if values else float("inf")


def pick_best(runs: dict[str, list[dict]], candidates) -> str:
    """The candidate variant with the lowest best validation MSE, averaged over its seeds."""
    return min((v for v in candidates if v in runs), key=lambda v: mean_val_mse(runs[v]))


def optimizer_steps(run: dict) -> int:
    """Optimizer steps a finished run took, all epochs (train.py records them)."""
    return int(run["results"]["optimizer_steps"])


class WallTimes:
    """Seconds of every train/evaluate process, kept in DIR/wall_times.json across invocations."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds = json.loads(path.read_text()) if path.is_file() else {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = seconds
        self.path.write_text(json.dumps(self.seconds, indent=2) + "\n")


def variant_words(words: list[str]) -> tuple[list[str], list[str]]:
    """A variant's words as (train.py's, evaluate.py's): rollout.* and split words evaluate
    (how its model is sampled, e.g. rollout.persistence), the others train."""
    train, evaluate = route(words)
    return [w for w in words if w in train], [w for w in evaluate if w not in train]


def train_and_evaluate(variants: dict[str, list[str]], seeds: list[int], root: Path,
                       words: tuple[list[str], list[str], list[str], list[str]],
                       walls: WallTimes) -> dict:
    """Train and evaluate every variant for every seed, skipping finished runs; load them.
    words: (the study's train.py words, the user's, the study's evaluate.py words, the
    user's); a variant's own words override the study's, the user's override both."""
    study_args, train_args, study_eval, eval_args = words
    runs = {}
    for variant, both in variants.items():
        own_train, own_eval = variant_words(both)
        for seed in seeds:
            run_dir = root / variant / f"seed{seed}"
            name = f"{variant}/seed{seed}"
            if run_files.is_finished(run_dir):
                print(f"skip train {name}: {run_dir} is finished")
            else:
                # An interrupted run starts over: a resumed one would time only its second half.
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
                walls.add(f"train {name}", run("train.py", merge(
                    study_args, own_train, train_args,
                    [f"seed={seed}", f"hydra.run.dir={run_dir}"])))
            if run_files.is_evaluated(run_dir):
                print(f"skip evaluate {name}: {run_files.evaluation_dir(run_dir)} is done")
            else:
                walls.add(f"evaluate {name}", evaluate(run_dir, merge(study_eval, own_eval,
                                                                      eval_args)))
            runs.setdefault(variant, []).append(comparison.load_run(run_dir))
    return runs


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds: expected integers separated by commas, got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds: expected distinct integers, got '{text}'")
    return seeds


def run_study(name: str, study: dict, seeds: list[int], root: Path, out: Path,
              words: tuple[list[str], ...]) -> Path:
    """A study without stage 2: its variants over the seeds; COMPARISON_<name>.md in `out`."""
    walls = WallTimes(root / "wall_times.json")
    runs = train_and_evaluate(study["variants"], seeds, root, words, walls)
    page = forecast_study if study["page"] == "forecasts" else studies
    return page.write(name, {**study, "seeds": seeds}, runs, out,
                      {"root": root, "walls": walls.seconds})


def run_stages(study: dict, seeds: list[int], root: Path, out: Path,
               words: tuple[list[str], ...], stage1_only: bool) -> Path:
    """Stage 1, then stage 2 on the best candidate; COMPARISON.md in `out`."""
    walls = WallTimes(root / "wall_times.json")
    started = time.perf_counter()
    runs = train_and_evaluate(study["variants"], seeds, root, words, walls)
    candidates = study["stage2"]["candidates"]
    best = pick_best(runs, candidates)
    if not stage1_only:
        runs |= train_and_evaluate(stage2(study, best), seeds, root, words, walls)
    info = {"study": study, "root": root, "seeds": seeds, "best": best, "walls": walls.seconds,
            "steps": optimizer_steps(runs[best][0]),
            "val_mse": {v: mean_val_mse(runs[v]) for v in candidates},
            "invocation_seconds": time.perf_counter() - started}
    return comparison.write(runs, out, info)


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=DEFAULT_STUDY,
                        help=f"conf/study/STUDY.yaml (default {DEFAULT_STUDY}; e.g. open_loop)")
    parser.add_argument("--seeds", help="training seeds, e.g. 0,1 (default: the study's)")
    parser.add_argument("--out", type=Path, default=Path("reports"),
                        help="the comparison page and figures/ go here")
    parser.add_argument("--dir", type=Path, help="runs directory; give an earlier one to "
                        "continue it (default outputs/compare/<time>)")
    parser.add_argument("--stage1-only", action="store_true",
                        help="skip a study's stage 2 (the Task 4 techniques)")
    parser.add_argument("overrides", nargs="*", help="key=value words for train.py/evaluate.py")
    args = parser.parse_args(argv)
    study = studies.load_study(args.study)
    seeds = parse_seeds(args.seeds) if args.seeds else study["seeds"]
    train_args, eval_args = route(args.overrides)
    for word in train_args:
        if key_of(word) in ("seed", "hydra.run.dir"):
            raise UserError(f"{key_of(word)}: set by compare; use --seeds and --dir instead")
    words = (study["train"], train_args, study["evaluate"], eval_args)
    root = args.dir or Path("outputs") / "compare" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    root.mkdir(parents=True, exist_ok=True)
    if "stage2" in study:
        path = run_stages(study, seeds, root, args.out, words, args.stage1_only)
    else:
        path = run_study(args.study, study, seeds, root, args.out, words)
    print(f"comparison: {path}")


if __name__ == "__main__":
    main()
