"""Small builders shared by the tests (real files, no mocks)."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from world_models.data.episodes import write_episode

ROOT = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a project command line in a test: headless, one thread, W&B offline
    and quiet with its caches under a temporary directory, Hydra's short errors; plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HYDRA_FULL_ERROR", "WANDB_API_KEY", "LOCAL_RANK", "RANK", "WORLD_SIZE")}
    wandb_home = Path(tempfile.gettempdir()) / f"world_models_tests_wandb_{os.getuid()}"
    env.update(
        SDL_VIDEODRIVER="dummy",
        OMP_NUM_THREADS="1",  # tiny models; tests run two processes at a time on 2 cores
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_CONFIG_DIR=str(wandb_home / "config"),
        WANDB_CACHE_DIR=str(wandb_home / "cache"),
        WANDB_DATA_DIR=str(wandb_home / "data"),
    )
    return {**env, **extra}


def run_cli(*args, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """`python *args` in the repository root, as a user would type it (extra environment
    variables as keywords); the CompletedProcess, its output captured as text. The one way the
    tests run a command line."""
    try:
        return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=cli_env(**env),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:  # what it had printed when it hung, to see where
        said = {name: text.decode(errors="replace") if isinstance(text, bytes) else text or ""
                for name, text in (("stdout", err.stdout), ("stderr", err.stderr))}
        raise AssertionError(f"{err}; its stdout ended: {said['stdout'][-2000:]!r}; "
                             f"its stderr ended: {said['stderr'][-2000:]!r}") from None


def compose_config(name: str, *overrides: str) -> DictConfig:
    """conf/<name>.yaml composed with `overrides` in this process, as the command line would
    compose it (no run directory: give paths.output_dir where one is needed)."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def train_here(run_dir, *overrides: str) -> dict:
    """training.train of conf/train.yaml composed with `overrides`, in this process, into
    run_dir; its results. A run without a command line has no .hydra/ directory: evaluate its
    checkpoint with data.* given."""
    from world_models.training import train

    return train(compose_config("train", f"paths.output_dir={run_dir}", *overrides))


def counting_episode(steps: int, size: int = 4, offset: int = 0) -> dict:
    """An episode whose frame t is filled with (offset + t) % 256 and action t is
    [0, t / 256, 0] (gas counts the step: exact in float32 and within its range [0, 1])."""
    values = (offset + np.arange(steps + 1)) % 256
    frames = np.broadcast_to(values[:, None, None, None], (steps + 1, size, size, 3))
    actions = np.zeros((steps, 3), np.float32)
    actions[:, 1] = np.arange(steps) / 256
    return {
        "frames": frames.astype(np.uint8),
        "actions": actions,
        "rewards": np.zeros(steps, np.float32),
    }


def write_counting_dataset(directory, lengths, size: int = 4) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for i, steps in enumerate(lengths):
        write_episode(directory / f"episode_{i:05d}.npz", **counting_episode(steps, size, 10 * i))
    return directory


class CrashAtEpoch(Callback):
    """Ends the process, as a kill would, before batch `batch` of epoch `epoch` (both from 0):
    the checkpoints of the epochs before it are on disk, nothing after. Used through the CLI as
    +callbacks.crash._target_=tests.helpers.CrashAtEpoch +callbacks.crash.epoch=1 (and
    +callbacks.crash.batch=2 for mid-epoch). Deterministic, where a timed SIGKILL races tiny
    epochs."""

    def __init__(self, epoch: int, batch: int = 0):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os._exit(3)
