"""Shared fixtures: one tiny real dataset and one tiny trained run per session, and the real
command lines (tests/helpers.run_cli)."""

from pathlib import Path

import pytest

from tests import helpers


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """The environment run_cli gives a command line, for tests that start their own Popen."""
    return helpers.cli_env()


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(*args, timeout=...) -> CompletedProcess of `python *args` in the repo root."""
    return helpers.run_cli


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny dataset (conf/data/tiny.yaml: 5 episodes of 30 steps), collected once by the
    real collector with the brownian policy (tests such as test_resume's lean on how a model
    learns from it: the car drives all the time)."""
    root = tmp_path_factory.mktemp("tiny_data")
    data_dir = root / "tiny"
    proc = helpers.run_cli("-m", "world_models.collect", "data=tiny", "policy=brownian",
                           f"data.dir={data_dir}", "collect.workers=1",
                           f"hydra.run.dir={root / 'collect_run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(data_dir.glob("*.npz")), f"no episodes in {data_dir}"
    return data_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data) -> Path:
    """The run directory of one epoch of model.hidden_size=16 on the tiny data, trained once by
    the real train.py and shared by the tests that only need a checkpoint and its run."""
    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    proc = helpers.run_cli("train.py", "data=tiny", f"data.dir={tiny_data}", "data.collect=false",
                           "model.hidden_size=16", "trainer.max_epochs=1",
                           f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir
