"""Convert the course's pickled dataset into our episode files (see episodes.py).

The course ships a pickle: a list of episodes, each a list of (state, action, reward)
steps, state a float array [3, H, W] in [0, 1]. Unpickling a file runs whatever code
the file names, so a dataset downloaded from elsewhere is loaded with an unpickler that
admits only the few globals numpy arrays and scalars need; anything else is refused
before it is imported, let alone called.
"""

import pickle
import sys
from pathlib import Path

import numpy as np

from world_models.data.episodes import (
    action_out_of_range,
    episode_files,
    make_directory,
    write_episode,
)
from world_models.errors import UserError

# What pickled numpy arrays/scalars reference (checked with pickletools, protocols 0-5).
# numpy 2.x writes `numpy._core`, numpy 1.x `numpy.core`; protocols 0-2 store bytes via
# `_codecs.encode`, protocol 5 stores arrays via `_frombuffer`. Lists, tuples, floats
# and ints need no globals at all.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    *(
        (f"{core}.{mod}", name)
        for core in ("numpy.core", "numpy._core")
        for mod, name in [
            ("multiarray", "_reconstruct"),
            ("multiarray", "scalar"),
            ("numeric", "_frombuffer"),
        ]
    ),
}
VALUE_TOL = 1e-4  # float error tolerated around [0, 1] before a state is called invalid


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise UserError(
                f"{self.path}: refusing to unpickle '{module}.{name}': only numpy arrays, "
                "numbers and plain containers are allowed"
            )
        return super().find_class(module, name)


def load_course_pickle(path) -> list:
    """Unpickle the course's dataset, admitting only numpy arrays, numbers and containers."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"IN.pkl: '{path}' is a directory, expected the course's pickle file")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            data = _NumpyOnlyUnpickler(f, path).load()
    except UserError:
        raise
    except Exception as err:  # a corrupt pickle can raise almost anything
        raise UserError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of episodes, got {type(data).__name__}")
    return data


def _episode_arrays(episode, where: str, shape: tuple | None):
    """Check one episode's steps; return (frames, actions, rewards) with all N states."""
    if not isinstance(episode, list | tuple):
        raise UserError(
            f"{where}: expected a list of (state, action, reward) steps, "
            f"got {type(episode).__name__}"
        )
    frames, actions, rewards = [], [], []
    for t, step in enumerate(episode):
        at = f"{where} step {t}"
        if not isinstance(step, list | tuple) or len(step) != 3:
            raise UserError(f"{at}: expected a (state, action, reward) 3-tuple")
        state, action, reward = step
        if not isinstance(state, np.ndarray) or state.dtype.kind not in "fiu":
            raise UserError(f"{at}: state must be a float array [3, H, W]")
        if state.ndim != 3 or state.shape[0] != 3 or shape not in (None, state.shape):
            want = list(shape) if shape else "[3, H, W]"
            raise UserError(f"{at}: state must have shape {want}, got {list(state.shape)}")
        shape = state.shape
        state = state.astype(np.float64)
        if not np.isfinite(state).all() or state.min() < -VALUE_TOL or state.max() > 1 + VALUE_TOL:
            raise UserError(f"{at}: state values must be finite and within [0, 1]")
        try:
            action = np.asarray(action, dtype=np.float32)
            reward = float(np.asarray(reward, dtype=np.float64))
        except (TypeError, ValueError):
            raise UserError(f"{at}: action must be 3 numbers and reward a number") from None
        if action.shape != (3,) or not np.isfinite(action).all():
            raise UserError(
                f"{at}: action must be 3 finite numbers, got shape {list(action.shape)}"
            )
        outside = action_out_of_range(action[None])  # [1, 3]
        if outside:
            raise UserError(f"{at}: action {outside.removeprefix('step 0, ')}")
        if not np.isfinite(reward):
            raise UserError(f"{at}: reward must be finite, got {reward}")
        frames.append(np.clip(np.round(state * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0))
        actions.append(action)
        rewards.append(reward)
    return frames, actions, rewards, shape


def convert_pickle(in_path, out_dir) -> int:
    """Convert every episode of the course's pickle; return how many files were written.

    Everything is read and checked before the first file is written, so a bad input
    leaves no half-converted dataset behind.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"OUT_DIR: '{out_dir}' is a file, expected a directory")
    if out_dir.is_dir() and episode_files(out_dir):
        raise UserError(f"{out_dir}: already holds episode files; choose an empty directory")
    data = load_course_pickle(in_path)
    converted, shape = {}, None
    for i, episode in enumerate(data):
        frames, actions, rewards, shape = _episode_arrays(episode, f"{in_path}: episode {i}", shape)
        if len(frames) < 2:
            print(
                f"warning: {in_path}: episode {i} has {len(frames)} step(s), need at least 2 "
                "for one transition; skipped",
                file=sys.stderr,
            )
            continue
        # State t is the frame on which action t was taken, so the N states are our
        # T+1 frames; the last action and reward lead to no recorded frame: dropped.
        converted[i] = (np.stack(frames), np.stack(actions[:-1]), np.asarray(rewards[:-1]))
    if not converted:
        raise UserError(f"{in_path}: no episode with at least 2 steps to convert")
    make_directory(out_dir, "OUT_DIR")
    written = []
    try:
        for i, (frames, actions, rewards) in converted.items():
            written.append(write_episode(out_dir / f"episode_{i:05d}.npz", frames, actions,
                                         rewards))
    except UserError as err:  # a full disk or a read-only directory
        for path in written:  # a rerun needs an empty directory: leave no half dataset
            path.unlink()
        raise UserError(f"{err}; nothing was converted") from None
    return len(converted)
