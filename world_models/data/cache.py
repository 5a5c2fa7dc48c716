"""One uncompressed, memory-mapped copy of a dataset's episodes, next to them.

`<data.dir>/.cache/<key>/` holds every episode one after another:
  frames.uint8     [sum(T+1), H, W, 3]
  actions.float32  [sum(T), 3]
  rewards.float32  [sum(T)]
  index.json       the episode files it was built from and each episode's length

Processes read it through the OS's page cache: DDP processes on one machine share one copy of
the pages, and a dataset larger than memory trains (the OS pages windows in and out). The
`*.npz` files stay the dataset; the cache is derived from them and can always be deleted.

The key is a hash of the episode files' names, sizes and modification times (stat, not
contents: hashing would read the whole dataset on every start, which is what the cache avoids).
Adding, changing (collectors and copies write a new file, hence a new mtime) or removing an
episode file gives another key, hence a fresh build; builds of older keys are removed.

A build is written under a temporary name and renamed into place, so an interrupted build or
two processes building at once (DDP ranks) never leave a partial cache under a key: the first
rename wins and the other build is discarded. A cache that is nonetheless damaged (truncated by
a full disk or a hand) is refused in one line rather than rebuilt: a build cannot leave one, so
something else broke it, and a rebuild under a path other processes may be reading would hide
that and race with them.
"""

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from world_models.data.episodes import Episode, read_episode
from world_models.errors import UserError

CACHE_DIR = ".cache"
VERSION = 1
ARRAYS = {"frames": np.uint8, "actions": np.float32, "rewards": np.float32}


def manifest(files: list[Path]) -> list[dict]:
    """What the cache key is made of: each episode file's name, size and mtime."""
    entries = []
    for path in files:
        stat = path.stat()
        entries.append({"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return entries


def cache_key(entries: list[dict]) -> str:
    text = json.dumps({"version": VERSION, "files": entries}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_episodes(directory, files: list[Path]) -> list[Episode]:
    """The episodes of `files` (the episode files of `directory`, in order), as read-only
    views into the cache; the cache is built first if these files have none."""
    entries = manifest(files)
    root = Path(directory) / CACHE_DIR
    target = root / cache_key(entries)
    if not target.is_dir():
        build(files, entries, target)
    return open_cache(target, entries)


def build(files: list[Path], entries: list[dict], target: Path) -> None:
    """Write the cache of `files` to a temporary directory, then rename it to `target`."""
    root = target.parent
    tmp = root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        index = write_arrays(files, tmp)
        if manifest(files) != entries:
            raise UserError(f"data.dir: episode files of '{root.parent}' changed while the data "
                            f"cache was built; run again once they are written")
        index["files"] = entries
        (tmp / "index.json").write_text(json.dumps(index) + "\n")
        try:
            tmp.rename(target)
        except OSError:  # another process renamed its build first: use that one
            if not target.is_dir():
                raise
    except OSError as err:
        raise UserError(f"data.cache: cannot build the data cache in '{root}' "
                        f"({err.strerror or err}); free space, or set data.cache=false to read "
                        f"the episodes into memory") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    remove_other_builds(root, keep=target.name)


def write_arrays(files: list[Path], out: Path) -> dict:
    """Append each episode's arrays to raw files in `out`, one episode in memory at a time;
    return the index: the frame shape and each episode's name and steps."""
    sinks = {name: open(out / f"{name}.{np.dtype(dtype).name}", "wb")
             for name, dtype in ARRAYS.items()}
    names, steps, frame_shape = [], [], None
    try:
        for path in files:
            episode = read_episode(path)  # validates: the cache holds only well-formed episodes
            if frame_shape is None:
                frame_shape = list(episode.frames.shape[1:])
            elif list(episode.frames.shape[1:]) != frame_shape:
                raise UserError(f"data.dir: episodes in '{path.parent}' have different frame "
                                f"shapes ({path.name}: {list(episode.frames.shape[1:])}, "
                                f"others: {frame_shape})")
            for name, dtype in ARRAYS.items():
                sinks[name].write(np.ascontiguousarray(getattr(episode, name), dtype).data)
            names.append(episode.name)
            steps.append(episode.steps)
    finally:
        for sink in sinks.values():
            sink.close()
    return {"version": VERSION, "frame_shape": frame_shape, "names": names, "steps": steps}


def remove_other_builds(root: Path, keep: str) -> None:
    """Delete the builds of other keys (stale: their files changed) and temporary directories
    of builds whose process is gone. A process still reading an old build keeps its pages:
    unlinking a mapped file frees it only when the last map closes."""
    for path in root.iterdir():
        if path.name == keep or not path.is_dir():
            continue
        if path.name.startswith(".tmp-") and process_alive(path.name.split("-")[1]):
            continue
        shutil.rmtree(path, ignore_errors=True)


def process_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def open_cache(target: Path, entries: list[dict]) -> list[Episode]:
    """Map a built cache and cut it into episodes; refuse a damaged one in one line."""
    index = read_index(target, entries)
    steps = np.asarray(index["steps"], dtype=np.int64)
    totals = {"frames": int(steps.sum() + len(steps)), "actions": int(steps.sum()),
              "rewards": int(steps.sum())}
    shapes = {"frames": tuple(index["frame_shape"]), "actions": (3,), "rewards": ()}
    arrays = {name: map_array(target, name, (totals[name], *shapes[name]))
              for name in ARRAYS}
    episodes, frame, step = [], 0, 0
    for name, count in zip(index["names"], index["steps"], strict=True):
        episodes.append(Episode(arrays["frames"][frame : frame + count + 1],
                                arrays["actions"][step : step + count],
                                arrays["rewards"][step : step + count], name))
        frame, step = frame + count + 1, step + count
    return episodes


def corrupt(target: Path, reason: str) -> UserError:
    return UserError(f"{target}: the data cache is corrupt ({reason}); delete '{target}' to "
                     f"rebuild it from the episode files")


def read_index(target: Path, entries: list[dict]) -> dict:
    try:
        index = json.loads((target / "index.json").read_text())
        ok = (index.get("version") == VERSION and index.get("files") == entries
              and len(index["names"]) == len(index["steps"]) == len(entries)
              and len(index["frame_shape"]) == 3)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise corrupt(target, f"index.json: {err.__class__.__name__}") from None
    if not ok:
        raise corrupt(target, "index.json does not match the episode files")
    return index


def map_array(target: Path, name: str, shape: tuple) -> np.ndarray:
    """A read-only map of one raw array file; its size must be the index's exactly."""
    dtype = np.dtype(ARRAYS[name])
    path = target / f"{name}.{dtype.name}"
    expected = int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size if path.is_file() else None
    if size != expected:
        raise corrupt(target, f"{path.name} has {size} bytes, expected {expected}")
    if expected == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)
