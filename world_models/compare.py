"""Issue 5 in one command: train a fixed set of variants over seeds, evaluate, write COMPARISON.md.

    python -m world_models.compare [--seeds 0,1] [--out reports] [--dir DIR] [--stage1-only]
                                   [key=value ...]

Stage 1 trains the report's model (flat encoder, nn.LSTM), the scratch core, residual, conv, the
transformer and the two warps (affine, flow); stage 2 adds scheduled sampling, input noise and both
to the stage-1 LSTM variant with the lowest mean VALIDATION MSE, so that the test
split chooses nothing. Runs go to DIR/<variant>/seed<k>/ (default DIR: outputs/compare/<time>);
one whose results.json and evaluate/summary.json exist is skipped, so the same --dir continues an
interrupted comparison. key=value words are routed as by world_models.report (data* to both
scripts, rollout.* and split to evaluate.py only); one budget, trainer.max_epochs, for all runs.
"""

import argparse
import json
import shutil
import statistics
import time
from datetime import datetime
from pathlib import Path

from world_models import comparison, studies
from world_models.errors import UserError, exit_on_user_error
from world_models.report import evaluate, key_of, merge, route, run

# The budget. The default dataset serves 360 training batches per epoch, which the flat LSTM
# and the warps train in ~8 s, conv in ~22 s and scheduled sampling in ~19 s. Measured on
# 2026-11-28: 12 epochs took 58 min for the 20 runs with the flow warp as stage-2 base.
BUDGET = ("trainer.max_epochs=12",)
# Stage 1 trains on clean inputs with teacher forcing, whatever train.yaml's defaults are.
PLAIN = ("train.scheduled_sampling.schedule=none", "train.input_noise=0",
         "train.open_loop.horizon=0", "data.train_seq_len=null", "data.train_stride=null",
         "checkpoint_monitor=val/loss")
STAGE1 = {
    "report": ["model=builtin", *PLAIN],
    "scratch": ["model=scratch", *PLAIN],
    "residual": ["model=builtin", "model.residual=true", *PLAIN],
    "conv": ["model=builtin", "model.encoder=conv", "model.residual=true", *PLAIN],
    "transformer": ["model=transformer", "model.residual=true", *PLAIN],
    "affine": ["model=builtin", "model.warp=affine", *PLAIN],
    "flow": ["model=builtin", "model.warp=flow", *PLAIN],
}
CANDIDATES = ("report", "scratch", "residual", "conv", "affine", "flow")  # stage 2 builds on one
SS_FRACTION = 0.6  # scheduled sampling reaches p(true frame) = 0 after 60% of the steps
INPUT_NOISE = 0.02
SS = "train.scheduled_sampling"


def stage2(best: str, steps: int) -> dict[str, list[str]]:
    """The Task 4 techniques on `best`, whose runs took `steps` optimizer steps each."""
    ss = [f"{SS}.schedule=linear", f"{SS}.start=1", f"{SS}.end=0",
          f"{SS}.decay_steps={max(1, round(SS_FRACTION * steps))}"]
    noise = [f"train.input_noise={INPUT_NOISE}"]
    return {f"{best}+ss": merge(STAGE1[best], ss), f"{best}+noise": merge(STAGE1[best], noise),
            f"{best}+ss+noise": merge(STAGE1[best], ss, noise)}


def mean_val_mse(runs: list[dict]) -> float:
    values = [v for v in (r["results"]["best_val_mse"] for r in runs) if v is not None]
    return statistics.fmean(values) if values else float("inf")


def pick_best(runs: dict[str, list[dict]]) -> str:
    """The candidate variant with the lowest best validation MSE, averaged over its seeds."""
    return min((v for v in CANDIDATES if v in runs), key=lambda v: mean_val_mse(runs[v]))


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


def train_and_evaluate(variants: dict[str, list[str]], seeds: list[int], root: Path,
                       train_args: list[str], eval_args: list[str], walls: WallTimes) -> dict:
    """Train and evaluate every variant for every seed, skipping finished runs; load them."""
    runs = {}
    for variant, words in variants.items():
        for seed in seeds:
            run_dir = root / variant / f"seed{seed}"
            name = f"{variant}/seed{seed}"
            if (run_dir / "results.json").is_file():
                print(f"skip train {name}: {run_dir / 'results.json'} exists")
            else:
                # An interrupted run starts over: a resumed one would time only its second half.
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
                walls.add(f"train {name}", run("train.py", merge(
                    words, train_args, [f"seed={seed}", f"hydra.run.dir={run_dir}"])))
            if (run_dir / "evaluate" / "summary.json").is_file():
                print(f"skip evaluate {name}: {run_dir / 'evaluate' / 'summary.json'} exists")
            else:
                walls.add(f"evaluate {name}", evaluate(run_dir, eval_args))
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


def run_study(name: str, root: Path, out: Path, train_args: list[str],
              eval_args: list[str]) -> None:
    """conf/study/<name>.yaml's variants over its seeds; COMPARISON_<name>.md in `out`."""
    study = studies.load_study(name)
    root.mkdir(parents=True, exist_ok=True)
    walls = WallTimes(root / "wall_times.json")
    runs = train_and_evaluate(study["variants"], study["seeds"], root,
                              merge(study["train"], train_args),
                              merge(study["evaluate"], eval_args), walls)
    path = studies.write(name, study, runs, out, {"root": root, "walls": walls.seconds})
    print(f"comparison: {path}")


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1", help="training seeds (default 0,1)")
    parser.add_argument("--out", type=Path, default=Path("reports"),
                        help="COMPARISON.md and figures/ go here")
    parser.add_argument("--dir", type=Path, help="runs directory; give an earlier one to "
                        "continue it (default outputs/compare/<time>)")
    parser.add_argument("--stage1-only", action="store_true", help="skip the Task 4 techniques")
    parser.add_argument("--study", help="run conf/study/STUDY.yaml's variants instead "
                        "(e.g. open_loop)")
    parser.add_argument("overrides", nargs="*", help="key=value words for train.py/evaluate.py")
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    train_args, eval_args = route(args.overrides)
    for word in train_args:
        if key_of(word) in ("seed", "hydra.run.dir"):
            raise UserError(f"{key_of(word)}: set by compare; use --seeds and --dir instead")
    train_args = merge(BUDGET, train_args)
    eval_args = merge(["rollout.horizon=150"], eval_args)
    root = args.dir or Path("outputs") / "compare" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    if args.study:
        return run_study(args.study, root, args.out, train_args, eval_args)
    root.mkdir(parents=True, exist_ok=True)
    walls = WallTimes(root / "wall_times.json")
    started = time.perf_counter()

    runs = train_and_evaluate(STAGE1, seeds, root, train_args, eval_args, walls)
    best = pick_best(runs)
    if not args.stage1_only:
        variants = stage2(best, optimizer_steps(runs[best][0]))
        runs |= train_and_evaluate(variants, seeds, root, train_args, eval_args, walls)
    info = {"root": root, "seeds": seeds, "best": best, "walls": walls.seconds,
            "steps": optimizer_steps(runs[best][0]),
            "val_mse": {v: mean_val_mse(runs[v]) for v in CANDIDATES},
            "invocation_seconds": time.perf_counter() - started}
    path = comparison.write(runs, args.out, info)
    print(f"comparison: {path}")


if __name__ == "__main__":
    main()
