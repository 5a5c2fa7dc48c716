"""Shared fixtures: one tiny real dataset per session, and the real `train.py` command line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """Environment for the CLI: headless, W&B offline and quiet, wandb's caches in a tmp dir."""
    home = tmp_path_factory.mktemp("wandb_home")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HYDRA_FULL_ERROR", "WANDB_API_KEY", "LOCAL_RANK", "RANK", "WORLD_SIZE")}
    env.update(
        SDL_VIDEODRIVER="dummy",
        OMP_NUM_THREADS="1",  # tiny models; tests run two processes at a time on 2 cores
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_CONFIG_DIR=str(home / "config"),
        WANDB_CACHE_DIR=str(home / "cache"),
        WANDB_DATA_DIR=str(home / "data"),
    )
    return env


@pytest.fixture(scope="session")
def run_cli(cli_env):
    """run_cli(*args, timeout=...) -> CompletedProcess of `python *args` in the repo root."""

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=cli_env,
                              capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, run_cli) -> Path:
    """A tiny dataset (conf/data/tiny.yaml: 5 episodes of 30 steps), collected once by the
    real collector."""
    root = tmp_path_factory.mktemp("tiny_data")
    data_dir = root / "tiny"
    proc = run_cli("-m", "world_models.collect", "data=tiny", f"data.dir={data_dir}",
                   "collect.workers=1", f"hydra.run.dir={root / 'collect_run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(data_dir.glob("*.npz")), f"no episodes in {data_dir}"
    return data_dir
