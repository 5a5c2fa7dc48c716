"""Converting the course's pickled dataset: round trip, validation and refusing unsafe pickles."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli
from world_models.data.convert import convert_pickle, load_course_pickle
from world_models.data.episodes import episode_files, read_episode
from world_models.errors import UserError


def _episodes(seed: int = 0) -> list:
    """Three small episodes: float32 states with array actions, float64 with list actions."""
    rng = np.random.default_rng(seed)
    episodes = []
    for n, dtype in [(4, np.float32), (3, np.float64), (2, np.float32)]:
        steps = []
        for _ in range(n):
            state = rng.random((3, 32, 32)).astype(dtype)
            state[0, 0, 0], state[1, 0, 0] = 0.0, 1.0
            action = rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32)  # steer, gas, brake
            if dtype is np.float64:
                action = [float(a) for a in action]
            steps.append((state, action, float(rng.normal())))
        episodes.append(steps)
    episodes[0][1] = (episodes[0][1][0], episodes[0][1][1], np.float32(0.5))  # numpy scalar
    return episodes


def _dump(path: Path, obj, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


class _Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


def _cli(*args) -> subprocess.CompletedProcess:
    return run_cli("-m", "world_models.convert_pickle", *args, timeout=120)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_round_trip(tmp_path: Path, protocol: int) -> None:
    episodes = _episodes()
    src = _dump(tmp_path / "course.pkl", episodes, protocol)
    assert convert_pickle(src, tmp_path / "out") == 3
    files = episode_files(tmp_path / "out")
    assert [f.name for f in files] == [f"episode_{i:05d}.npz" for i in range(3)]
    for steps, f in zip(episodes, files, strict=True):
        ep = read_episode(f)
        states = np.stack([np.asarray(s, dtype=np.float64) for s, _, _ in steps])
        expected = np.clip(np.round(states * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(ep.frames, expected)
        np.testing.assert_array_equal(ep.actions, np.array([a for _, a, _ in steps[:-1]], "f4"))
        np.testing.assert_array_equal(ep.rewards, np.array([r for _, _, r in steps[:-1]], "f4"))
        assert ep.steps == len(steps) - 1


def test_short_episodes_are_skipped_with_a_warning(tmp_path: Path, capsys) -> None:
    episodes = _episodes()
    episodes.insert(1, episodes[0][:1])
    episodes.insert(0, [])
    src = _dump(tmp_path / "course.pkl", episodes)
    assert convert_pickle(src, tmp_path / "out") == 3
    names = [f.name for f in episode_files(tmp_path / "out")]
    assert names == ["episode_00001.npz", "episode_00003.npz", "episode_00004.npz"]
    err = capsys.readouterr().err
    assert "episode 0 has 0 step" in err and "episode 2 has 1 step" in err


def test_malicious_pickle_is_refused_without_side_effect(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    src = _dump(tmp_path / "evil.pkl", [[(_Evil(target), np.zeros(3), 0.0)]])
    with pytest.raises(UserError, match=r"refusing to unpickle '(posix|nt)\.system'") as err:
        load_course_pickle(src)
    assert str(src) in str(err.value)
    assert not target.exists()
    with pytest.raises(UserError):
        convert_pickle(src, tmp_path / "out")
    assert not target.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda e: e[1].__setitem__(2, (np.zeros((3, 16, 32)),) + e[1][2][1:]),
            r"episode 1 step 2: state must have shape \[3, 32, 32\], got \[3, 16, 32\]",
        ),
        (
            lambda e: e[0].__setitem__(0, (np.zeros((32, 32, 3)),) + e[0][0][1:]),
            r"episode 0 step 0: state must have shape \[3, H, W\], got \[32, 32, 3\]",
        ),
        (
            lambda e: e[2].__setitem__(1, (np.full((3, 32, 32), 2.0),) + e[2][1][1:]),
            r"episode 2 step 1: state values must be finite and within \[0, 1\]",
        ),
        (
            lambda e: e[0].__setitem__(3, (e[0][3][0], np.zeros(2), 0.0)),
            r"episode 0 step 3: action must be 3 finite numbers",
        ),
        (
            lambda e: e[1].__setitem__(0, (e[1][0][0], [0.0, float("nan"), 0.0], 0.0)),
            r"episode 1 step 0: action must be 3 finite numbers",
        ),
        (
            lambda e: e[1].__setitem__(1, (e[1][1][0], [0.0, 1.5, 0.0], 0.0)),
            r"episode 1 step 1: action column 1 \(gas\) is 1.5, outside \[0, 1\]",
        ),
        (
            lambda e: e[0].__setitem__(1, e[0][1][:2]),
            r"episode 0 step 1: expected a \(state, action, reward\) 3-tuple",
        ),
        (lambda e: e.append("not an episode"), r"episode 3: expected a list"),
    ],
)
def test_invalid_content_is_refused_before_writing(tmp_path: Path, mutate, message) -> None:
    episodes = _episodes()
    mutate(episodes)
    src = _dump(tmp_path / "course.pkl", episodes)
    with pytest.raises(UserError, match=message):
        convert_pickle(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written, not even the valid episode 0


def test_bad_input_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="missing.pkl: no such file"):
        load_course_pickle(tmp_path / "missing.pkl")
    (tmp_path / "text.pkl").write_text("hello, not a pickle\n")
    with pytest.raises(UserError, match="text.pkl: not a readable pickle"):
        load_course_pickle(tmp_path / "text.pkl")
    with pytest.raises(UserError, match="expected a list of episodes, got dict"):
        load_course_pickle(_dump(tmp_path / "dict.pkl", {"a": 1}))


def test_cli_success(tmp_path: Path) -> None:
    src = _dump(tmp_path / "course.pkl", _episodes())
    result = _cli(src, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert f"wrote 3 episodes to {tmp_path / 'out'}" in result.stdout
    assert len(episode_files(tmp_path / "out")) == 3


def test_cli_refuses_malicious_pickle(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    src = _dump(tmp_path / "evil.pkl", [_Evil(target)])
    result = _cli(src, tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "refusing to unpickle" in lines[0]
    assert "Traceback" not in result.stderr
    assert not target.exists()


def test_cli_refuses_wrong_state_shape(tmp_path: Path) -> None:
    episodes = _episodes()
    episodes[2][0] = (np.zeros((3, 32, 31)),) + episodes[2][0][1:]
    result = _cli(_dump(tmp_path / "course.pkl", episodes), tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and "episode 2 step 0" in result.stderr


def test_cli_refuses_non_empty_output_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "episode_00000.npz"
    existing.write_bytes(b"precious")
    result = _cli(_dump(tmp_path / "course.pkl", _episodes()), out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: {out}: already holds episode files; choose an empty directory"
    )
    assert existing.read_bytes() == b"precious"
    assert [p.name for p in out.iterdir()] == ["episode_00000.npz"]
