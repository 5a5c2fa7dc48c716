"""The debug presets (conf/debug/) composed with the real train.yaml and run in this process on
tiny data (the command line's one-line contract is test_train.py's)."""

import json
from contextlib import redirect_stdout
from io import StringIO

import pytest

from tests.helpers import compose_config
from world_models.errors import UserError
from world_models.training import train

SMALL = ("model.hidden_size=16",)
RUNS = {
    "fast": ["debug=fast"],
    "overfit": ["debug=overfit"],
    # An absurdly small learning rate: the loss cannot fall in the 3 epochs allowed.
    "overfit-stuck": ["debug=overfit", "model.lr=1e-9", "trainer.max_epochs=3"],
    # Fewer steps than the preset's 40 (each epoch of tiny data adds a rollout): still ended by
    # max_steps, in the second epoch.
    "profile": ["debug=profile", "trainer.max_steps=7"],
}


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """runs(name) -> (run_dir, what it printed, the UserError it ended with or None) of
    RUNS[name], run once."""
    done = {}

    def get(name):
        if name not in done:
            run_dir = tmp_path_factory.mktemp("debug") / "run"
            cfg = compose_config("train", "data=tiny", f"data.dir={tiny_data}",
                                 "data.collect=false", f"paths.output_dir={run_dir}", *SMALL,
                                 *RUNS[name])
            printed, error = StringIO(), None
            with redirect_stdout(printed):
                try:
                    train(cfg)
                except UserError as err:
                    error = err
            done[name] = (run_dir, printed.getvalue(), error)
        return done[name]

    return get


def ok(run):
    run_dir, printed, error = run
    assert error is None, f"{error}\n{printed[-2000:]}"
    return run_dir, printed


def test_fast_runs_one_batch_of_each_stage_and_the_rollout_without_checkpoints(runs):
    run_dir, printed = ok(runs("fast"))
    results = json.loads((run_dir / "results.json").read_text())
    assert "(no checkpoints)" in printed and "checkpoint: " not in printed
    assert results["optimizer_steps"] == 1
    assert results["test_mse"] > 0
    assert (run_dir / "rollouts" / "epoch000_grid.png").stat().st_size > 0
    assert not list(run_dir.rglob("*.ckpt"))


def test_overfit_reaches_the_threshold_and_stops(runs):
    run_dir, printed = ok(runs("overfit"))
    line = next(ln for ln in printed.splitlines() if "overfit: train/loss" in ln)
    assert "it learns" in line
    epochs = json.loads((run_dir / "results.json").read_text())["epochs"]
    assert 1 <= epochs < 300  # stopped early, before trainer.max_epochs


def test_overfit_fails_in_one_line_when_the_model_cannot_learn(runs):
    run_dir, _, error = runs("overfit-stuck")
    assert error is not None and "\n" not in str(error)
    assert str(error).startswith("callbacks.overfit.threshold:")
    assert "in 3 epochs" in str(error)
    assert not (run_dir / "results.json").exists()


def test_profile_leaves_its_report_and_prints_the_slowest_actions(runs):
    run_dir, printed = ok(runs("profile"))
    report = (run_dir / "profile" / "fit-report.txt").read_text()
    assert "run_training_batch" in report
    lines = printed.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("slowest actions of"))
    rows = lines[head + 2 : head + 12]
    assert len(rows) == 10 and all(r.split()[0].replace(".", "").isdigit() for r in rows)
    totals = [float(r.split()[0]) for r in rows]
    assert totals == sorted(totals, reverse=True)
    # tiny data has 5 training batches an epoch, so max_steps ends it
    assert json.loads((run_dir / "results.json").read_text())["optimizer_steps"] == 7
