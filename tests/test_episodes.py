"""The on-disk format: round trip, atomic writes, and every kind of bad file."""

import zipfile

import numpy as np
import pytest

from tests.helpers import counting_episode
from world_models.data.episodes import episode_files, load_dataset, read_episode, write_episode
from world_models.errors import UserError


def test_round_trip_keeps_arrays_and_extra_keys(tmp_path):
    episode = counting_episode(7, size=6)
    path = write_episode(tmp_path / "a.npz", **episode, seed=np.array([3, 4]))
    loaded = read_episode(path)
    np.testing.assert_array_equal(loaded.frames, episode["frames"])
    np.testing.assert_array_equal(loaded.actions, episode["actions"])
    assert loaded.frames.dtype == np.uint8 and loaded.actions.dtype == np.float32
    assert loaded.steps == 7 and loaded.name == "a"
    with np.load(path) as npz:  # a plain npz: any numpy user can read it
        np.testing.assert_array_equal(npz["seed"], [3, 4])


def test_same_arrays_give_the_same_bytes(tmp_path):
    episode = counting_episode(5)
    a = write_episode(tmp_path / "a.npz", **episode).read_bytes()
    b = write_episode(tmp_path / "b.npz", **episode).read_bytes()
    assert a == b


def test_write_leaves_no_temporary_file(tmp_path):
    write_episode(tmp_path / "a.npz", **counting_episode(3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_temporary_files_are_not_listed(tmp_path):
    write_episode(tmp_path / "a.npz", **counting_episode(3))
    (tmp_path / ".episode_00001.npz.123.tmp").write_bytes(b"partial")
    assert [p.name for p in episode_files(tmp_path)] == ["a.npz"]


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: e.update(frames=e["frames"].astype(np.float32)), "'frames' must be uint8"),
        (lambda e: e.update(frames=e["frames"][..., :2]), "'frames' must be uint8 [T+1, H, W, 3]"),
        (lambda e: e.update(actions=e["actions"][:, :2]), "'actions' must be float [T, 3]"),
        (lambda e: e.update(actions=e["actions"].astype(np.int64)), "'actions' must be float"),
        (lambda e: e["actions"].__setitem__((2, 1), np.nan), "non-finite"),
        (lambda e: e["actions"].__setitem__((4, 0), -1.5),
         "action at step 4, column 0 (steer) is -1.5, outside [-1, 1]"),
        (lambda e: e["actions"].__setitem__((3, 2), 1.25),
         "action at step 3, column 2 (brake) is 1.25, outside [0, 1]"),
        (lambda e: e["actions"].__setitem__((0, 1), -0.5),
         "action at step 0, column 1 (gas) is -0.5, outside [0, 1]"),
        (lambda e: e.update(frames=e["frames"][:-1]), "inconsistent lengths"),
        (lambda e: e.update(rewards=e["rewards"][:-1]), "inconsistent lengths"),
        (lambda e: e.pop("rewards"), "missing keys ['rewards']"),
    ],
)
def test_bad_episode_is_refused_naming_the_file(tmp_path, change, message):
    episode = counting_episode(6)
    change(episode)
    path = _save(tmp_path / "bad.npz", **episode)
    with pytest.raises(UserError) as err:
        read_episode(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_truncated_file_is_refused(tmp_path):
    path = write_episode(tmp_path / "a.npz", **counting_episode(20, size=8))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="not a readable .npz episode file"):
        read_episode(path)


def test_corrupt_member_is_refused(tmp_path):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("frames.npy", b"not an array")
        archive.writestr("actions.npy", b"nor this")
        archive.writestr("rewards.npy", b"nor this")
    with pytest.raises(UserError, match="a.npz"):
        read_episode(path)


def test_missing_and_empty_directories_are_refused(tmp_path):
    with pytest.raises(UserError, match="data.dir: directory .* does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(UserError, match=r"data.dir: no episode files \(\*.npz\)"):
        load_dataset(tmp_path)


def test_mixed_frame_sizes_are_refused(tmp_path):
    write_episode(tmp_path / "a.npz", **counting_episode(3, size=4))
    write_episode(tmp_path / "b.npz", **counting_episode(3, size=8))
    with pytest.raises(UserError, match="different frame shapes"):
        load_dataset(tmp_path)
