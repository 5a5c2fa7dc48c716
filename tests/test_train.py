"""train.py through its real command line, on a tiny real dataset (see conftest.py). Every
run uses model.hidden_size=16 and one or two epochs of 5 train windows, so each process
costs mostly its start-up (a few seconds); resumes run in this process (train_here)."""

import csv
import json
import math
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.helpers import ROOT, train_here

SMALL = ("model.hidden_size=16", "checkpoint_monitor=val/loss")  # the best epoch is tested
# Input noise is off by default; the resume runs turn it on so that its random draws are checked.
NOISE = "train.input_noise=0.02"

# The CLI runs that depend on no other run: `runs` starts them all, two at a time in this order,
# in the background while the tests check them (the machine has 2 cores).
CASES = {
    # name: (core, protocol, overrides) -- end to end, both cores and both protocols
    "builtin-bptt-wandb": ("builtin", "bptt",
                           ["model=builtin", "trainer.max_epochs=2", "logger=[csv,wandb]",
                            "group=e2e", NOISE]),
    "scratch-bptt": ("scratch", "bptt", ["model=scratch", "trainer.max_epochs=1"]),
    "scratch-per_step": ("scratch", "per_step", ["experiment=task2", "trainer.max_epochs=1"]),
}
# The command line's contract (one line on stderr, exit 2, no traceback) for a type refused
# by world_models.settings, a key Hydra refuses while composing and a failure in the middle of
# training; test_training.py checks every bad setting in this process with the same code.
BAD_CLI = [
    (["data.seq_len=abc"], ["data.seq_len", "expected an integer", "'abc'"]),
    (["model.bogus=1"], ["model.bogus"]),
    (["model.lr=1e30", "trainer.max_epochs=1"], ["train/loss", "global step"]),
]
RUNS = {
    **{name: overrides for name, (_, _, overrides) in CASES.items()},
    # builtin-bptt-wandb killed as epoch 2 starts (schedules are fractions of the run)
    "interrupted": ["model=builtin", "trainer.max_epochs=2", NOISE, "+callbacks.crash.epoch=1",
                    "+callbacks.crash._target_=tests.helpers.CrashAtEpoch"],
    "multirun": ["-m", "model=builtin,scratch", "trainer.max_epochs=1"],
    **{" ".join(overrides): overrides for overrides, _ in BAD_CLI},
}


@pytest.fixture(scope="module")
def train(run_cli, tiny_data):
    """train(run_dir, *overrides) -> CompletedProcess of `python train.py` on the tiny data;
    with "-m" among the overrides, run_dir is the sweep directory."""

    def run(run_dir: Path, *overrides: str, timeout: float = 300):
        flags = [o for o in overrides if o.startswith("-")]  # -m goes first, as users type it
        overrides = [o for o in overrides if not o.startswith("-")]
        where = "sweep" if "-m" in flags else "run"
        return run_cli("train.py", *flags, "data=tiny", f"data.dir={tiny_data}",
                       "data.collect=false", f"hydra.{where}.dir={run_dir}", *SMALL, *overrides,
                       timeout=timeout)

    return run


@pytest.fixture(scope="module")
def runs(train, tmp_path_factory):
    """runs(name) -> (run_dir, process) of RUNS[name]; the first call starts them all."""
    pool, futures = ThreadPoolExecutor(max_workers=2), {}

    def start(name: str, overrides: list[str]):
        run_dir = tmp_path_factory.mktemp("run") / "run"
        return run_dir, train(run_dir, *overrides)

    def get(name: str):
        if not futures:
            futures.update({n: pool.submit(start, n, o) for n, o in RUNS.items()})
        return futures[name].result()

    yield get
    pool.shutdown(cancel_futures=True)


def here(tiny_data) -> tuple[str, ...]:
    """The overrides of train(), for a run in this process (train_here)."""
    return ("data=tiny", f"data.dir={tiny_data}", "data.collect=false", *SMALL)


def ok(proc) -> None:
    tail = f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{tail}"
    assert "Traceback" not in proc.stdout + proc.stderr


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def last_lines(text: str, n: int = 1) -> str:
    return "\n".join([line for line in text.splitlines() if line.strip()][-n:])


# -- 1. end to end, both cores and both protocols (one W&B run among them) ------------------


@pytest.mark.parametrize("name", list(CASES))
def test_train_end_to_end(runs, name):
    core, protocol, overrides = CASES[name]
    run_dir, proc = runs(name)
    ok(proc)
    r = results(run_dir)
    for key in ("test_mse", "best_val_mse", "train_frames_per_s"):
        assert math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    for key in ("copy_last", "mean_frame"):
        assert math.isfinite(r["baselines"][key]) and r["baselines"][key] >= 0
    assert r["core"] == core and r["protocol"] == protocol
    assert isinstance(r["parameters"], int) and r["parameters"] > 0
    assert r["epochs"] == int(next(o for o in overrides if "max_epochs" in o).split("=")[1])
    assert r["seed"] == 0
    assert Path(r["checkpoint"]).is_file()
    assert Path(r["checkpoint"]).parent == run_dir / "checkpoints"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == r["optimizer_steps"] > 0 and last["epoch"] == r["epochs"] - 1
    assert (run_dir / "train.log").is_file()

    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    assert {"train/loss_epoch", "val/loss", "test/loss"} <= columns, columns
    tested = [float(row["test/loss"]) for row in rows if row["test/loss"]]
    assert tested == [pytest.approx(r["test_mse"])]
    assert f"results: {run_dir / 'results.json'}" in proc.stdout
    assert f"checkpoint: {r['checkpoint']}" in proc.stdout  # what make evaluate CKPT= takes


def test_lightning_info_lines_are_printed_once_and_kept_in_train_log(runs):
    run_dir, proc = runs("scratch-bptt")
    ok(proc)
    console = proc.stdout + proc.stderr
    assert console.count("GPU available") == 1, console[-3000:]
    assert "litlogger" not in console and "LeafSpec" not in console  # others' noise, filtered
    assert "GPU available" in (run_dir / "train.log").read_text()


# -- 2. W&B, offline -----------------------------------------------------------------------


def wandb_records(path: Path):
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pieces = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += block - pos % block
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pieces = chunk if kind in (1, 2) else pieces + chunk  # full/first, middle/last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            yield record


def test_wandb_offline_run_has_group_tags_and_config(runs):
    run_dir, proc = runs("builtin-bptt-wandb")
    ok(proc)
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run_dir / "wandb").iterdir())
    [log] = offline[0].glob("run-*.wandb")
    records = list(wandb_records(log))
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_group == "e2e"
    assert set(run.tags) == {"builtin", "bptt"}
    assert run.display_name == "builtin-bptt-seed0"
    config = {item.key: json.loads(item.value_json)
              for r in records if r.WhichOneof("record_type") == "config"
              for item in r.config.update}
    assert config["model"]["core"] == "builtin" and config["model"]["hidden_size"] == 16
    assert config["seed"] == 0 and config["train"]["protocol"] == "bptt"
    assert config["group"] == "e2e"
    history_keys = {item.key or "/".join(item.nested_key)
                    for r in records if r.WhichOneof("record_type") == "history"
                    for item in r.history.item}
    assert {"train/loss_epoch", "val/loss", "test/loss"} <= history_keys, history_keys


# -- 3. DDP: two gloo processes ------------------------------------------------------------


def test_ddp_two_cpu_processes(train, tmp_path):
    run_dir = tmp_path / "run"
    proc = train(run_dir, "trainer=ddp", "trainer.max_epochs=1")
    ok(proc)
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr  # really two processes
    assert proc.stdout.count("results: ") == 1
    assert sorted(p.name for p in tmp_path.rglob("results.json")) == ["results.json"]
    r = results(run_dir)
    assert r["epochs"] == 1 and math.isfinite(r["test_mse"])
    assert Path(r["checkpoint"]).is_file()


# -- 4. multirun over both cores -----------------------------------------------------------


def check_sweep(sweep: Path, proc) -> None:
    ok(proc)
    # Job directories sit right under the sweep dir: data.dir's '/' is kept out of their names.
    found = {results(p.parent)["core"]: p.parent.name for p in sweep.glob("*/results.json")}
    assert set(found) == {"builtin", "scratch"}, list(sweep.rglob("results.json"))
    assert found["builtin"].startswith("0_") and "model=builtin" in found["builtin"]
    assert found["scratch"].startswith("1_") and "model=scratch" in found["scratch"]


def test_multirun_over_both_cores(runs):
    check_sweep(*runs("multirun"))


def test_the_local_launcher_is_joblibs_with_two_jobs():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=local"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


@pytest.mark.slow  # 3 more processes; the sweep itself is test_multirun_over_both_cores's
def test_multirun_through_the_joblib_launcher(train, tmp_path):
    sweep = tmp_path / "sweep"
    proc = train(sweep, "-m", "hydra/launcher=local", "model=builtin,scratch",
                 "trainer.max_epochs=1")
    assert "Joblib" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    check_sweep(sweep, proc)


# -- 5. resume -----------------------------------------------------------------------------


def test_resume_equals_an_uninterrupted_run(tiny_data, runs, tmp_path):
    """A: 2 epochs in one go (the W&B run: logging must not change the numbers either);
    B: the same run killed as its second epoch starts; C: B's last.ckpt resumed in a new run
    dir. C must equal A, though the training draws input noise and the open-loop warm-up's
    slices, and the open-loop steps begin in the second epoch. C runs in this process."""
    a, proc_a = runs("builtin-bptt-wandb")
    b, proc_b = runs("interrupted")
    ok(proc_a)
    assert proc_b.returncode == 3, proc_b.stderr[-3000:]  # CrashAtEpoch's exit
    assert not (b / "results.json").exists()
    rc = train_here(tmp_path / "run", *here(tiny_data), "model=builtin", NOISE,
                    "trainer.max_epochs=2", f"ckpt_path={b / 'checkpoints' / 'last.ckpt'}")
    ra = results(a)
    assert rc["epochs"] == ra["epochs"] == 2
    assert rc["test_mse"] == pytest.approx(ra["test_mse"], rel=1e-6)
    assert rc["best_val_mse"] == pytest.approx(ra["best_val_mse"], rel=1e-6)


def test_resume_with_nothing_left_to_train_tests_the_checkpoint(tiny_data, runs, tmp_path):
    """Resuming a 1-epoch checkpoint with trainer.max_epochs=1 trains nothing: it still ends
    and tests the resumed run's best checkpoint, carried into the new run with its score."""
    b, proc_b = runs("scratch-bptt")
    ok(proc_b)
    c = tmp_path / "run"
    rc = train_here(c, *here(tiny_data), "model=scratch", "trainer.max_epochs=1",
                    f"ckpt_path={b / 'checkpoints' / 'last.ckpt'}")
    rb = results(b)
    assert rc["best_val_mse"] == rb["best_val_mse"]
    assert Path(rc["checkpoint"]).parent == c / "checkpoints"
    assert rc["test_mse"] == pytest.approx(rb["test_mse"], rel=1e-6)


# -- 6. bad input: a clear message naming the key, no traceback ----------------------------


def refused(proc, *words: str) -> str:
    both = proc.stdout + proc.stderr
    assert proc.returncode != 0, both[-3000:]
    assert "Traceback" not in both, both[-3000:]
    line = last_lines(proc.stderr)
    for word in words:
        assert word in line, (word, line)
    return line


@pytest.mark.parametrize("overrides,words", BAD_CLI, ids=[" ".join(o) for o, _ in BAD_CLI])
def test_bad_input_is_refused_in_one_line(runs, overrides, words):
    _, proc = runs(" ".join(overrides))
    line = refused(proc, *words)
    assert line.startswith("error: ")
    if "trainer.max_epochs=1" not in overrides:  # refused before Lightning says anything
        assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1, proc.stderr
    assert proc.returncode == 2


def test_non_finite_loss_line_is_not_glued_to_the_progress_bar(runs):
    _, proc = runs("model.lr=1e30 trainer.max_epochs=1")
    assert proc.returncode == 2
    assert proc.stdout.endswith("\n"), proc.stdout[-300:]  # the bar's line was ended first
