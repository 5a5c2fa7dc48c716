"""Files of other collectors in a data directory: claims, so that collectors sharing a
directory split its episodes, and the temporary files of interrupted writes.

Before recording episode i a collector creates .episode_0000i.claim with O_EXCL, which
exactly one process can do, also on a shared network filesystem; the file names the claiming
host and process and is removed once the episode is written. A claim whose process is gone
(same host, no such pid) is stale and taken over; a claim from another host is honoured until
its collector removes it (delete it by hand if that machine died).
"""

import os
import socket
import time
from pathlib import Path

from world_models.data.episodes import remove_quietly


def claim_path(directory, index: int) -> Path:
    return Path(directory) / f".episode_{index:05d}.claim"


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}\n"


# A claim is written the instant after it is created; one still empty after this many seconds
# lost its writer in between (a worker killed by pool.terminate() at that instant): it would
# otherwise be held forever, and a rerun waited for it without end.
UNWRITTEN_AFTER = 10.0


def is_stale(path: Path) -> bool:
    """True if the process that wrote the claim at `path` is known to be gone, or the claim
    was never written (empty for UNWRITTEN_AFTER seconds)."""
    try:
        host, pid = path.read_text().split()
    except ValueError:  # empty: being written this instant, or never will be
        try:
            return time.time() - path.stat().st_mtime > UNWRITTEN_AFTER
        except OSError:  # gone
            return False
    except OSError:  # gone
        return False
    return host == socket.gethostname() and pid.isdigit() and _pid_is_gone(int(pid))


def claim(directory, index: int) -> bool:
    """Claim episode `index` for this process; False if a live collector holds it."""
    path = claim_path(directory, index)
    for _ in range(2):  # a second try after removing a stale claim
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not is_stale(path):
                return False
            remove_quietly(path)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(_owner())
        return True
    return False


def release(directory, index: int) -> None:
    remove_quietly(claim_path(directory, index))


def held(directory, index: int) -> bool:
    """True if another live collector holds a claim on episode `index`."""
    path = claim_path(directory, index)
    return path.exists() and not is_stale(path)


def _pid_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def remove_stale(directory) -> None:
    """Delete the claims and the temporary files (.episode_*.<pid>.tmp) of processes gone."""
    directory = Path(directory)
    for path in directory.glob(".episode_*.claim"):
        if is_stale(path):
            remove_quietly(path)
    for tmp in directory.glob(".episode_*.tmp"):
        pid = tmp.name.split(".")[-2]
        if not pid.isdigit() or _pid_is_gone(int(pid)):
            remove_quietly(tmp)
