"""The on-disk dataset format: a directory of episode files `*.npz`.

Each file holds
  frames   uint8   [T+1, H, W, 3]  frames[t] is the observation on which actions[t] was taken
  actions  float32 [T, 3]          steer in [-1, 1], gas and brake in [0, 1]
  rewards  float32 [T]
and may hold more keys, which readers ignore. Nothing else in the directory is
needed to read it: files from elsewhere can be dropped in.
"""

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from world_models.errors import UserError

ACTION_LOW = np.array([-1.0, 0.0, 0.0], dtype=np.float32)
ACTION_HIGH = np.array([1.0, 1.0, 1.0], dtype=np.float32)
ACTION_NAMES = ("steer", "gas", "brake")


def action_out_of_range(actions: np.ndarray) -> str | None:
    """'step S, column C (name) is V, outside [lo, hi]' for the first action out of its range."""
    outside = np.argwhere((actions < ACTION_LOW) | (actions > ACTION_HIGH))  # [N, 2]
    if not len(outside):
        return None
    step, column = (int(i) for i in outside[0])
    return (f"step {step}, column {column} ({ACTION_NAMES[column]}) is "
            f"{float(actions[step, column]):g}, outside [{ACTION_LOW[column]:g}, "
            f"{ACTION_HIGH[column]:g}]")


@dataclass
class Episode:
    frames: np.ndarray  # [T+1, H, W, 3] uint8
    actions: np.ndarray  # [T, 3] float32
    rewards: np.ndarray  # [T] float32
    name: str = ""

    @property
    def steps(self) -> int:
        return len(self.actions)


def validate(frames, actions, rewards, source: str) -> None:
    """Raise UserError naming `source` unless the arrays follow the format."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise UserError(
            f"{source}: 'frames' must be uint8 [T+1, H, W, 3], "
            f"got {frames.dtype} {list(frames.shape)}"
        )
    if actions.ndim != 2 or actions.shape[1] != 3 or not np.issubdtype(actions.dtype, np.floating):
        raise UserError(
            f"{source}: 'actions' must be float [T, 3], got {actions.dtype} {list(actions.shape)}"
        )
    if rewards.ndim != 1 or not np.issubdtype(rewards.dtype, np.number):
        raise UserError(
            f"{source}: 'rewards' must be a number array [T], got {list(rewards.shape)}"
        )
    steps = len(actions)
    if steps < 1:
        raise UserError(f"{source}: episode has no steps")
    if len(frames) != steps + 1 or len(rewards) != steps:
        raise UserError(
            f"{source}: inconsistent lengths: {len(frames)} frames, {steps} actions, "
            f"{len(rewards)} rewards (expected T+1 frames for T actions and T rewards)"
        )
    if not np.isfinite(actions).all():
        raise UserError(f"{source}: 'actions' holds non-finite values")
    outside = action_out_of_range(actions)
    if outside:
        raise UserError(f"{source}: action at {outside}")
    if not np.isfinite(rewards).all():
        raise UserError(f"{source}: 'rewards' holds non-finite values")


def write_episode(path, frames, actions, rewards, **extra) -> Path:
    """Write one episode atomically: a reader never sees a partial file."""
    path = Path(path)
    frames = np.asarray(frames)
    actions = np.asarray(actions, dtype=np.float32)
    rewards = np.asarray(rewards, dtype=np.float32)
    validate(frames, actions, rewards, str(path))
    # The temporary name does not end in .npz, so an interrupted write is never
    # listed as an episode; os.replace is atomic on one filesystem.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    arrays = {"frames": frames, "actions": actions, "rewards": rewards, **extra}
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for key, value in arrays.items():
                # A fixed timestamp (np.savez stamps the current time) makes the file's
                # bytes a function of its arrays alone: reruns and workers agree byte for byte.
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, "w") as member:
                    np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
        os.replace(tmp, path)
    except OSError as err:  # a full disk or a read-only directory: the user's to fix
        remove_quietly(tmp)
        raise UserError(f"{path}: cannot write ({err.strerror or err})") from None
    except BaseException:  # Ctrl-C mid-write: leave no temporary file behind
        remove_quietly(tmp)
        raise
    return path


def remove_quietly(path: Path) -> None:
    """Delete `path` if it is there; a read-only filesystem refuses even that, harmlessly."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def make_directory(directory, key: str) -> Path:
    """Create `directory` (and its parents) or refuse in one line naming `key` and the cause."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{key}: '{directory}' is a file, expected a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{key}: cannot create '{directory}' ({err.strerror or err})") from None
    return directory


def read_episode(path) -> Episode:
    """Read and validate one episode file; bad files raise UserError naming the file."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):  # else np.load suggests allow_pickle
        raise UserError(f"{path}: not a readable .npz episode file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"frames", "actions", "rewards"} - set(npz.files)
            if missing:
                raise UserError(f"{path}: missing keys {sorted(missing)} (see the dataset format)")
            frames, actions, rewards = npz["frames"], npz["actions"], npz["rewards"]
        for key, value in (("frames", frames), ("actions", actions), ("rewards", rewards)):
            if not isinstance(value, np.ndarray):
                raise UserError(f"{path}: '{key}' is not a numpy array")
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, io.UnsupportedOperation) as err:
        raise UserError(f"{path}: not a readable .npz episode file ({err})") from None
    validate(frames, actions, rewards, str(path))
    return Episode(frames, actions.astype(np.float32), rewards.astype(np.float32), path.stem)


def episode_files(directory) -> list[Path]:
    """Episode files of a dataset directory, in a stable order."""
    return sorted(Path(directory).glob("*.npz"))


def dataset_files(directory) -> list[Path]:
    """The episode files of a dataset directory; raise UserError if there are none."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"data.dir: '{directory}' is a file, expected a directory")
    if not directory.is_dir():
        raise UserError(f"data.dir: directory '{directory}' does not exist")
    files = episode_files(directory)
    if not files:
        raise UserError(f"data.dir: no episode files (*.npz) in '{directory}'")
    return files


def load_dataset(directory) -> list[Episode]:
    """Read every episode of a directory into memory; raise UserError if there are none."""
    episodes = [read_episode(f) for f in dataset_files(directory)]
    shapes = {e.frames.shape[1:] for e in episodes}
    if len(shapes) > 1:
        raise UserError(f"data.dir: episodes in '{directory}' have different frame shapes {shapes}")
    return episodes
