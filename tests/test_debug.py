"""The debug presets (conf/debug/) through the real train.py command line on tiny data."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

SMALL = ("model.hidden_size=16",)
RUNS = {
    "fast": ["debug=fast"],
    "overfit": ["debug=overfit"],
    # An absurdly small learning rate: the loss cannot fall in the 3 epochs allowed.
    "overfit-stuck": ["debug=overfit", "model.lr=1e-9", "trainer.max_epochs=3"],
    "profile": ["debug=profile"],
}


@pytest.fixture(scope="module")
def runs(run_cli, tiny_data, tmp_path_factory):
    """runs(name) -> (run_dir, process) of RUNS[name]; the first call starts them all, two at
    a time (the machine has 2 cores)."""
    pool, futures = ThreadPoolExecutor(max_workers=2), {}

    def start(overrides):
        run_dir = tmp_path_factory.mktemp("debug") / "run"
        return run_dir, run_cli("train.py", "data=tiny", f"data.dir={tiny_data}",
                                "data.collect=false", f"hydra.run.dir={run_dir}", *SMALL,
                                *overrides)

    def get(name):
        if not futures:
            futures.update({n: pool.submit(start, o) for n, o in RUNS.items()})
        return futures[name].result()

    yield get
    pool.shutdown(cancel_futures=True)


def ok(proc):
    tail = f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{tail}"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_fast_runs_one_batch_of_each_stage_and_the_rollout_without_checkpoints(runs):
    run_dir, proc = runs("fast")
    ok(proc)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["optimizer_steps"] == 1
    assert results["test_mse"] > 0
    assert (run_dir / "rollouts" / "epoch000_grid.png").stat().st_size > 0
    assert not list(run_dir.rglob("*.ckpt"))


def test_overfit_reaches_the_threshold_and_stops(runs):
    run_dir, proc = runs("overfit")
    ok(proc)
    line = next(ln for ln in proc.stdout.splitlines() if "overfit: train/loss" in ln)
    assert "it learns" in line
    epochs = json.loads((run_dir / "results.json").read_text())["epochs"]
    assert 1 <= epochs < 300  # stopped early, before trainer.max_epochs


def test_overfit_fails_in_one_line_when_the_model_cannot_learn(runs):
    run_dir, proc = runs("overfit-stuck")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: callbacks.overfit.threshold:")
    assert "in 3 epochs" in last
    assert not (run_dir / "results.json").exists()


def test_profile_leaves_its_report_and_prints_the_slowest_actions(runs):
    run_dir, proc = runs("profile")
    ok(proc)
    report = (run_dir / "profile" / "fit-report.txt").read_text()
    assert "run_training_batch" in report
    lines = proc.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("slowest actions of"))
    rows = lines[head + 2 : head + 12]
    assert len(rows) == 10 and all(r.split()[0].replace(".", "").isdigit() for r in rows)
    totals = [float(r.split()[0]) for r in rows]
    assert totals == sorted(totals, reverse=True)
    # A few dozen steps: tiny data has 5 training batches an epoch, so max_steps ends it.
    assert json.loads((run_dir / "results.json").read_text())["optimizer_steps"] == 40
