"""Shared fixtures: one tiny real dataset and one tiny trained run per session, and the real
command lines (tests/helpers.run_cli)."""

import fcntl
import os
from pathlib import Path

import pytest

from tests import helpers


def pytest_configure(config):
    # Tiny models, as in the command lines the tests start: a second thread only spins, and
    # make test's two workers share the two cores.
    import torch

    torch.set_num_threads(1)


# The modules whose tests take longest, started first: make test's workers take whole files
# in collection order, and a long one started last would run alone at the end.
LONGEST_FIRST = ("test_train", "test_report", "test_tune", "test_stochastic", "test_collect",
                 "test_envs", "test_dream", "test_rollout", "test_resume", "test_training")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.stem
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the tests of a file keep their order


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """The environment run_cli gives a command line, for tests that start their own Popen."""
    return helpers.cli_env()


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(*args, timeout=...) -> CompletedProcess of `python *args` in the repo root."""
    return helpers.run_cli


def made_once(tmp_path_factory, name: str, make) -> Path:
    """The directory `name`, filled by make(directory) once per test session. Under
    pytest-xdist (make test) the workers share it: the first to come makes it, holding a lock,
    and the others wait for it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.mktemp(name)
        make(root)
        return root
    root = tmp_path_factory.getbasetemp().parent / name  # the session's, above each worker's
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".made").exists():
            root.mkdir(exist_ok=True)
            make(root)
            (root / ".made").touch()
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny dataset (conf/data/tiny.yaml: 5 episodes of 30 steps), collected once by the
    real collector with the brownian policy (tests such as test_resume's lean on how a model
    learns from it: the car drives all the time). Tests copy it before they change it."""

    def collect(root: Path):
        proc = helpers.run_cli("-m", "world_models.collect", "data=tiny", "policy=brownian",
                               f"data.dir={root / 'tiny'}", "collect.workers=1",
                               f"hydra.run.dir={root / 'collect_run'}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert sorted((root / "tiny").glob("*.npz")), f"no episodes in {root / 'tiny'}"

    return made_once(tmp_path_factory, "tiny_data", collect) / "tiny"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data) -> Path:
    """The run directory of one epoch of model.hidden_size=16 on the tiny data, trained once by
    the real train.py and shared by the tests that only need a checkpoint and its run."""

    def train(root: Path):
        proc = helpers.run_cli("train.py", "data=tiny", f"data.dir={tiny_data}",
                               "data.collect=false", "model.hidden_size=16",
                               "trainer.max_epochs=1", f"hydra.run.dir={root / 'run'}")
        assert proc.returncode == 0, proc.stderr[-3000:]

    return made_once(tmp_path_factory, "tiny_run", train) / "run"
