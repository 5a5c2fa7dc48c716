"""The run directory: where a training run keeps its config, checkpoints, results and
evaluations. Every other module asks this one for those paths and files.

A run directory (<paths.log_dir>/train/<time>/, or a sweep's job directory) holds
  .hydra/config.yaml       the composed config the run was started with
  .hydra/overrides.yaml    the key=value words it was started with
  checkpoints/last.ckpt    the last finished epoch: what a resume starts from
  checkpoints/best-*.ckpt  the best epoch by validation loss
  csv/metrics.csv          the CSV logger's losses per epoch
  results.json             written once the run is tested: its presence means finished
  evaluate/                evaluate.py's output for the run (make report, make compare):
    summary.json           the numbers to quote
    rollout_metrics.csv    every metric per step, strategy and rollout
"""

import csv
import json
import os
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from world_models.errors import UserError

RESULTS = "results.json"
LOCK = ".training.lock"  # the pid of the training writing to the run directory
SUMMARY = "summary.json"
ROLLOUT_METRICS = "rollout_metrics.csv"
EVALUATION = "evaluate"
# Keys that may differ between an interrupted run and its resume: where files go, and the
# resume itself.
NOT_COMPARED = ("ckpt_path", "paths")


def config_path(run_dir) -> Path:
    return Path(run_dir) / ".hydra" / "config.yaml"


def last_checkpoint(run_dir) -> Path:
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def run_of(ckpt) -> Path:
    """The run directory a checkpoint was written in (<run>/checkpoints/<name>.ckpt)."""
    return Path(ckpt).resolve().parent.parent


def evaluation_dir(run_dir) -> Path:
    """Where make report and make compare put evaluate.py's output for a run."""
    return Path(run_dir) / EVALUATION


def metrics_csv(run_dir) -> Path:
    return Path(run_dir) / "csv" / "metrics.csv"


def run_config(run_dir) -> DictConfig | None:
    """The composed config a run was started with; None when it is not there (moved, or
    a checkpoint made elsewhere)."""
    path = config_path(run_dir)
    return OmegaConf.load(path) if path.is_file() else None


def run_overrides(run_dir) -> list[str]:
    """The key=value words a run was started with ([] when unknown)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    return list(OmegaConf.load(path)) if path.is_file() else []


def is_finished(run_dir) -> bool:
    return (Path(run_dir) / RESULTS).is_file()


def check_free(run_dir) -> None:
    """Refuse, in one line, a run directory a training must not write to: one that holds a
    finished run (its checkpoints and results would be overwritten), or one that a live
    training is writing to (both would write the same checkpoints and logs; one crashed at its
    end on the other's CSV rows)."""
    run_dir = Path(run_dir)
    if is_finished(run_dir):
        raise UserError(f"hydra.run.dir: '{run_dir}' holds a finished run ({RESULTS}); "
                        "training there would overwrite it: give another directory")
    holder = _holder(run_dir / LOCK)
    if holder is not None:
        raise UserError(f"hydra.run.dir: '{run_dir}' is in use by another training "
                        f"(pid {holder}): give each run its own directory")


def is_ddp_worker() -> bool:
    """A process Lightning's DDP launched beside the one the user started."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0


def check_run_dir_word(words: list[str]) -> None:
    """train.py, before Hydra writes the run's config into its directory: check_free the
    directory a `hydra.run.dir=...` word names (the default is a new timestamped one)."""
    if is_ddp_worker() or {"-m", "--multirun"} & set(words):
        return
    for word in words:
        if word.lstrip("+").startswith("hydra.run.dir="):
            check_free(word.split("=", 1)[1])


@contextmanager
def claimed(run_dir):
    """Hold `run_dir` for one training while the block runs (check_free first); a lock left
    by a training that died is taken over. DDP's worker processes share their launcher's."""
    if is_ddp_worker():
        yield
        return
    run_dir = Path(run_dir)
    check_free(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    for attempt in range(2):
        try:
            with open(lock, "x") as f:  # exactly one process can create it
                f.write(f"{os.getpid()}\n")
            break
        except FileExistsError:
            check_free(run_dir)  # a live training holds it: refused
            if attempt:
                raise
            lock.unlink(missing_ok=True)  # its training died: take the directory over
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _holder(lock: Path) -> int | None:
    """The pid in a lock file if that process is alive (and not this one), else None."""
    try:
        pid = int(lock.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return pid


def is_evaluated(run_dir) -> bool:
    return (evaluation_dir(run_dir) / SUMMARY).is_file()


def _read(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"--runs: '{path.parent}' holds no {path.name}; is it a finished run?")
    return json.loads(path.read_text())


def _write(path: Path, values: dict) -> Path:
    path.write_text(json.dumps(values, indent=2) + "\n")
    return path


def write_results(run_dir, results: dict) -> Path:
    return _write(Path(run_dir) / RESULTS, results)


def read_results(run_dir) -> dict:
    return _read(Path(run_dir) / RESULTS)


def write_summary(out_dir, summary: dict) -> Path:
    """evaluate.py's summary in its output directory (a run's evaluation_dir, or any)."""
    return _write(Path(out_dir) / SUMMARY, summary)


def read_summary(run_dir) -> dict:
    """The summary of the run's evaluation (evaluation_dir)."""
    return _read(evaluation_dir(run_dir) / SUMMARY)


def read_rollout_metrics(run_dir) -> dict[str, dict[str, list[float]]]:
    """metric -> strategy -> per-step mean over the rollouts, steps from 1, of the run's
    evaluation."""
    by_metric = {}
    with open(evaluation_dir(run_dir) / ROLLOUT_METRICS) as f:
        for row in csv.DictReader(f):
            by_metric.setdefault(row["metric"], {}).setdefault(row["strategy"], []).append(
                float(row["mean"]))
    return by_metric


def tested_checkpoint(run_dir) -> Path:
    """The checkpoint a finished run tested (results.json), else its last.ckpt."""
    return Path(read_results(run_dir)["checkpoint"] or last_checkpoint(run_dir))


def key_of(word: str) -> str:
    return word.split("=", 1)[0].lstrip("+~")


def is_data_word(word: str) -> bool:
    """Does this key=value word choose the data (what the test split is drawn from)? Not
    data.collect: evaluation never collects, whatever training was told."""
    key = key_of(word)
    return (key == "data" or key.startswith("data.") or key == "paths.data_root") and \
        key != "data.collect"


def comparable(config) -> dict:
    """The settings that decide what a run computes, as a plain dict (unresolved)."""
    container = OmegaConf.to_container(config, resolve=False)
    return {k: v for k, v in container.items() if k not in NOT_COMPARED}


def newest_interrupted_run(log_dir, cfg: DictConfig) -> Path:
    """last.ckpt of the newest unfinished run under `log_dir` composed as `cfg` is."""
    wanted = comparable(cfg)
    found = []
    for last in Path(log_dir).rglob("checkpoints/last.ckpt"):
        run_dir = run_of(last)
        config = run_config(run_dir)
        if is_finished(run_dir) or config is None:
            continue
        if comparable(config) == wanted:
            found.append((last.stat().st_mtime, last))
    if not found:
        raise UserError(
            f"ckpt_path=last: no interrupted run (checkpoints/last.ckpt, no {RESULTS}) with "
            f"this config under '{log_dir}'; give the checkpoint's path instead"
        )
    return max(found)[1]


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """cfg.ckpt_path, with `last` replaced by the newest interrupted run of the same config."""
    if cfg.ckpt_path != "last":
        return cfg.ckpt_path
    path = newest_interrupted_run(cfg.paths.log_dir, cfg)
    print(f"ckpt_path=last: resuming {path}")
    return str(path)
