"""Filesystem faults give one line naming the path and the cause, and lose no finished episode.

A full disk and a read-only directory are real: small tmpfs mounts (root only; skipped
elsewhere), written through the real command lines.
"""

import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli
from world_models.data.convert import convert_pickle
from world_models.data.episodes import episode_files, read_episode, write_episode
from world_models.errors import UserError


@pytest.fixture
def mount(tmp_path):
    """mount(options) -> a fresh tmpfs directory mounted with `options` (unmounted after)."""
    mounted = []

    def make(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", str(where)], check=True)


def collect(data_dir: Path, log: Path, *overrides: str):
    return run_cli("-m", "world_models.collect", "data=tiny", f"data.dir={data_dir}",
                f"hydra.run.dir={log}", *overrides)


def one_line(proc, *words: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1].split("\r")[-1]
    assert line.startswith("error: ")
    for word in words:
        assert word in line, (word, line)
    return line


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    data_file = tmp_path / "data"
    data_file.write_text("not a directory")
    one_line(collect(data_file, tmp_path / "log"), f"data.dir: '{data_file}' is a file")
    assert data_file.read_text() == "not a directory"


def test_full_disk_keeps_the_finished_episodes_and_a_rerun_completes(mount, tmp_path):
    disk = mount("size=64k")  # room for two or three of the tiny episodes (about 20 kB each)
    data_dir = disk / "tiny"
    line = one_line(collect(data_dir, tmp_path / "log", "collect.workers=2"),
                    "No space left on device", str(data_dir), "are kept")
    assert "episode_0000" in line  # names the file it could not write
    kept = episode_files(data_dir)
    assert 1 <= len(kept) < 5
    for path in kept:
        read_episode(path)
    assert not list(data_dir.glob(".*.tmp"))  # the half-written file is gone

    subprocess.run(["mount", "-o", "remount,size=1m", str(disk)], check=True)
    proc = collect(data_dir, tmp_path / "log2", "collect.workers=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"({len(kept)} already there)" in proc.stdout
    assert len(episode_files(data_dir)) == 5


def test_read_only_data_dir_is_named(mount, tmp_path):
    read_only = mount("ro,size=64k")
    one_line(collect(read_only, tmp_path / "log", "collect.workers=2"),
             str(read_only), "Read-only file system")
    one_line(collect(read_only / "new", tmp_path / "log2", "collect.workers=1"),
             f"data.dir: cannot create '{read_only / 'new'}'", "Read-only file system")


def course_pickle(path: Path) -> Path:
    rng = np.random.default_rng(0)
    episodes = [[(rng.random((3, 32, 32)).astype(np.float32), np.zeros(3), 0.0)
                 for _ in range(30)] for _ in range(5)]  # incompressible: ~35 kB a file
    path.write_bytes(pickle.dumps(episodes))
    return path


def test_conversion_into_a_full_disk_leaves_no_half_dataset(mount, tmp_path):
    out = mount("size=64k") / "out"
    with pytest.raises(UserError, match="No space left on device.*nothing was converted"):
        convert_pickle(course_pickle(tmp_path / "course.pkl"), out)
    assert not list(out.iterdir())


def test_conversion_into_a_read_only_directory_is_named(mount, tmp_path):
    read_only = mount("ro,size=64k")
    source = course_pickle(tmp_path / "course.pkl")
    with pytest.raises(UserError, match=f"^{read_only}/episode_00000.npz: cannot write "
                                        r"\(Read-only file system\)"):
        convert_pickle(source, read_only)
    with pytest.raises(UserError, match=f"^OUT_DIR: cannot create '{read_only / 'new'}' "
                                        r"\(Read-only file system\)"):
        convert_pickle(source, read_only / "new")


def test_a_failed_write_removes_its_temporary_file(mount):
    disk = mount("size=16k")
    frames = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(UserError, match=r"episode.npz: cannot write \(No space left on device\)"):
        write_episode(disk / "episode.npz", frames, np.zeros((39, 3)), np.zeros(39))
    assert list(disk.iterdir()) == []

