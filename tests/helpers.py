"""Small builders shared by the tests (real files, no mocks)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback

from world_models.data.episodes import write_episode

ROOT = Path(__file__).resolve().parents[1]


def run(args, timeout=600, **env):
    """Run a project command line as a user would; return the CompletedProcess."""
    full_env = {
        **os.environ,
        "SDL_VIDEODRIVER": "dummy",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "0",
        **env,
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
