"""make tune: Hydra's Optuna sweeper on the tiny data, through the real command lines."""

import json
import os
import signal
import subprocess
import time

import optuna
import pytest
import yaml

from world_models.tuning import best_experiment, objective_value

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small and quick trials: one epoch of the tiny data, small models.
QUICK = ("trainer.max_epochs=1", "model.hidden_size=choice(8,16)")


def tiny(data_dir) -> tuple[str, ...]:
    return ("data=tiny", f"data.dir={data_dir}", "data.collect=false")


def trials(sweep_dir, name="default") -> list:
    return optuna.load_study(study_name=name,
                             storage=f"sqlite:///{sweep_dir}/optuna.db").get_trials()


def started(sweep_dir) -> list:
    """The trials asked for so far, once trial 0 has finished ([] before)."""
    # Not earlier: opening a study while the sweeper creates its tables makes both race to
    # stamp the schema version, and one of them fails.
    if not (sweep_dir / "trial0" / "results.json").is_file():
        return []
    try:
        return trials(sweep_dir)
    except Exception:  # locked while the sweeper writes: look again
        return []


def test_objective_and_best_experiment():
    assert objective_value({"best_val_mse": 0.5}, "val/loss") == 0.5
    assert objective_value({"val_rollout_mse_ar": 0.25}, "val/rollout_mse_ar") == 0.25
    assert objective_value({"best_val_mse": None}, "val/loss") is None
    with pytest.raises(Exception, match="objective: this run has no finite val/loss"):
        objective_value({"best_val_mse": None}, "val/loss", required=True)
    experiment = best_experiment({"data": "tiny", "model.lr": "0.001", "seed": "3"},
                                 groups={"data", "model"})
    assert experiment == {"defaults": [{"override /data": "tiny"}], "model": {"lr": 0.001},
                          "seed": 3}


def test_a_diverging_trial_is_recorded_as_failed_and_the_search_goes_on(run_cli, tiny_data,
                                                                          tmp_path):
    sweep = tmp_path / "tune"
    proc = run_cli("train.py", "hparams_search=default", *tiny(tiny_data), *QUICK,
                   "model.lr=choice(1e30,1e-3)", "hydra.sweeper.n_trials=3",
                   f"hydra.sweep.dir={sweep}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = {t.params["model.lr"]: t.state.name for t in trials(sweep)}
    assert states == {1e30: "FAIL", 1e-3: "COMPLETE"}, states
    assert "error: train/loss is nan" in proc.stderr or "error: train/loss is inf" in proc.stderr
    best = yaml.safe_load((sweep / "experiment" / "best.yaml").read_text())
    assert best["model"]["lr"] == 1e-3


def test_a_search_where_every_trial_fails_ends_in_one_line(run_cli, tiny_data, tmp_path):
    proc = run_cli("train.py", "hparams_search=default", *tiny(tiny_data), *QUICK,
                   "model.lr=1e30", "hydra.sweeper.n_trials=1",
                   f"hydra.sweep.dir={tmp_path / 'tune'}", timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: tune: none of the trials of study 'default' completed")


# About 20 s on an idle machine: kept in the fast suite, which CI runs.
def test_make_tune_continues_after_a_kill_and_its_best_trains_again(cli_env, run_cli,
                                                                    tiny_data, tmp_path):
    sweep = tmp_path / "tune"
    command = ["make", "-s", "tune", "hparams_search=default", "hydra.sweeper.n_trials=3",
               *tiny(tiny_data), *QUICK, f"hydra.sweep.dir={sweep}"]
    # Kill it (the whole process group, as a lost node would) once trial 1 has started.
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(command, cwd=ROOT, env=cli_env, start_new_session=True,
                                 stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while len(started(sweep)) < 2:
        assert first.poll() is None, f"it ended by itself:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the first trial never finished"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = trials(sweep)
    done = sum(t.state.name == "COMPLETE" for t in before)
    assert before[0].state.name == "COMPLETE" and done < 3, [t.state.name for t in before]
    assert before[-1].state.name == "RUNNING"  # cut short by the kill

    second = subprocess.run(command, cwd=ROOT, env=cli_env, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "continuing study 'default'" in second.stdout
    assert f"{done} of 3 trials done" in second.stdout
    after = trials(sweep)
    old, new = after[: len(before)], after[len(before) :]
    # The finished trials kept, the interrupted one marked failed, the missing ones run.
    assert [t.state.name for t in old] == [t.state.name for t in before[:-1]] + ["FAIL"]
    assert old[-1].user_attrs["interrupted"] is True
    assert [(t.params, t.value) for t in old[:-1]] == [(t.params, t.value) for t in before[:-1]]
    assert [t.state.name for t in new] == ["COMPLETE"] * (3 - done)
    # Reseeded: the continued study does not draw the first run's points again.
    assert all(t.params != before[0].params for t in new)
    for t in new:  # Hydra's job number is the trial number
        assert (sweep / f"trial{t.number}" / "results.json").is_file()

    best = min((t for t in after if t.state.name == "COMPLETE"), key=lambda t: t.value)
    again = tmp_path / "again"
    proc = run_cli("train.py", "experiment=best", f"hydra.searchpath=[file://{sweep}]",
                   f"hydra.run.dir={again}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((again / "results.json").read_text())
    assert objective_value(results, "val/loss") == pytest.approx(best.value, rel=1e-6)
