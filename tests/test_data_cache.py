"""The memory-mapped data cache: rebuilt when episode files change, refused when damaged, the
same windows and losses as reading the episodes into memory, uint8 until the device."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.helpers import counting_episode, write_counting_dataset
from tests.test_filesystem_faults import mount  # noqa: F401  (the fixture: real tmpfs mounts)
from world_models.data.cache import CACHE_DIR, cached_episodes
from world_models.data.datamodule import CarRacingDataModule, float_batch, to_float_frames
from world_models.data.episodes import dataset_files, episode_files, write_episode
from world_models.errors import UserError


def builds(directory: Path) -> list[str]:
    """The cache builds (and temporary build directories) in `directory`."""
    root = directory / CACHE_DIR
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def load(directory: Path):
    return cached_episodes(directory, dataset_files(directory))


def assert_same_as_files(episodes, directory: Path):
    from world_models.data.episodes import read_episode

    files = episode_files(directory)
    assert [ep.name for ep in episodes] == [f.stem for f in files]
    for ep, path in zip(episodes, files, strict=True):
        truth = read_episode(path)
        assert np.array_equal(ep.frames, truth.frames) and ep.frames.dtype == np.uint8
        assert np.array_equal(ep.actions, truth.actions)
        assert np.array_equal(ep.rewards, truth.rewards)


def test_cache_is_built_once_and_maps_the_episodes(tmp_path):
    directory = write_counting_dataset(tmp_path / "data", [7, 12, 9])
    episodes = load(directory)
    assert_same_as_files(episodes, directory)
    assert all(isinstance(ep.frames, np.memmap) for ep in episodes)  # views of the map
    (build,) = builds(directory)
    frames_file = directory / CACHE_DIR / build / "frames.uint8"
    written = frames_file.stat().st_mtime_ns
    assert frames_file.stat().st_size == (8 + 13 + 10) * 4 * 4 * 3
    load(directory)  # a second start maps the same build, writes nothing
    assert builds(directory) == [build] and frames_file.stat().st_mtime_ns == written


def test_cache_is_rebuilt_when_an_episode_is_added_changed_or_removed(tmp_path):
    directory = write_counting_dataset(tmp_path / "data", [7, 12, 9])
    load(directory)
    seen = set(builds(directory))

    def rebuilt() -> list:
        episodes = load(directory)
        (build,) = builds(directory)  # the stale build is gone
        assert build not in seen
        seen.add(build)
        assert_same_as_files(episodes, directory)
        return episodes

    write_episode(directory / "extra.npz", **counting_episode(5, offset=100))
    assert [ep.steps for ep in rebuilt()] == [7, 12, 9, 5]
    # changed: episode 1 rewritten with other frames of the same length (and size)
    write_episode(directory / "episode_00001.npz", **counting_episode(12, offset=50))
    assert rebuilt()[1].frames[0, 0, 0, 0] == 50
    (directory / "episode_00000.npz").unlink()
    assert [ep.steps for ep in rebuilt()] == [12, 9, 5]


def test_a_truncated_or_garbled_cache_is_refused_in_one_line(tmp_path):
    directory = write_counting_dataset(tmp_path / "data", [7, 12, 9])
    load(directory)
    build = directory / CACHE_DIR / builds(directory)[0]
    frames_file = build / "frames.uint8"
    with open(frames_file, "r+b") as f:
        f.truncate(frames_file.stat().st_size - 10)
    with pytest.raises(UserError) as err:
        load(directory)
    message = str(err.value)
    assert "\n" not in message and "frames.uint8" in message and "corrupt" in message
    assert f"delete '{build}'" in message
    (build / "index.json").write_text("{not json")
    with pytest.raises(UserError, match="index.json"):
        load(directory)
    shutil.rmtree(build)  # what the message says to do
    assert_same_as_files(load(directory), directory)
    assert all(f.is_file() for f in episode_files(directory))  # no episode was touched


def test_a_failed_build_leaves_no_cache_and_names_the_file(tmp_path):
    directory = write_counting_dataset(tmp_path / "data", [7, 12, 9])
    (directory / "episode_00002.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="episode_00002.npz"):
        load(directory)
    assert builds(directory) == []  # the temporary build was removed, nothing under a key


def test_a_cache_that_cannot_be_written_is_refused_naming_data_cache(tmp_path):
    directory = write_counting_dataset(tmp_path / "data", [7])
    (directory / CACHE_DIR).write_text("a file where the cache directory goes")
    with pytest.raises(UserError, match=r"^data.cache: cannot build the data cache in .*"
                                        r"data.cache=false"):
        load(directory)
    assert (directory / CACHE_DIR).read_text().startswith("a file")


def datamodule(directory, **kw) -> CarRacingDataModule:
    dm = CarRacingDataModule(str(directory), seq_len=6, batch_size=3, seed=0, collect=False,
                             split=[0.6, 0.2, 0.2], **kw)
    dm.prepare_data()
    dm.setup()
    return dm


def test_cache_and_memory_serve_the_same_batches(tiny_data, tmp_path):
    data = shutil.copytree(tiny_data, tmp_path / "tiny", ignore=shutil.ignore_patterns(CACHE_DIR))
    cached, in_memory = datamodule(data, cache=True), datamodule(data, cache=False)
    assert builds(data) and in_memory.cache is False
    for split in ("train", "val", "test"):
        for a, b in zip(cached._loader(split, shuffle=split == "train"),
                        in_memory._loader(split, shuffle=split == "train"), strict=True):
            assert a["frames"].dtype == torch.uint8
            assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["actions"], b["actions"])
    assert torch.equal(cached.mean_frame(), in_memory.mean_frame())
    for a, b in zip(cached.sequences("test"), in_memory.sequences("test"), strict=True):
        assert torch.equal(a["frames"], b["frames"])


def test_worker_processes_read_the_map(tiny_data):
    here, workers = datamodule(tiny_data), datamodule(tiny_data, num_workers=2)
    served = list(workers.train_dataloader())  # forked workers, each reading the map
    assert len(served) == len(here.train_dataloader()) > 1
    for a, b in zip(here.train_dataloader(), served, strict=True):
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["actions"], b["actions"])


def test_uint8_batches_give_the_loss_of_float_batches(tiny_data):
    from world_models.models.world_model import WorldModel

    dm = datamodule(tiny_data)
    torch.manual_seed(0)
    model = WorldModel(hidden_size=16, frame_shape=dm.frame_shape).eval()
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(3)
    dataset = dm.datasets["train"]
    for step, batch in enumerate(loader):
        on_device = dm.on_after_batch_transfer(batch, 0)  # uint8 -> float, as Lightning does
        # the float batch as it was served before: each window converted on the host
        order = list(loader.sampler)[step * 3 : step * 3 + 3]
        windows = [dataset.index[i] for i in order]
        frames = torch.stack([to_float_frames(dataset.frames[e][s : s + dataset.seq_len])
                              for e, s in windows])  # [B, L, 3, H, W] float
        assert batch["frames"].dtype == torch.uint8 and frames.dtype == torch.float32
        with torch.no_grad():
            loss_uint8 = model.window_loss(on_device)
            loss_float = model.window_loss({"frames": frames, "actions": batch["actions"]})
        assert loss_uint8.item() == loss_float.item() and loss_uint8 > 0
    assert float_batch(batch)["frames"].max() <= 1.0


# -- through the command line ----------------------------------------------------------------


class RecordCacheMaps(Callback):
    """Writes, per rank, the cache files this process maps (from /proc/self/maps) to `out`."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_train_end(self, trainer, pl_module):
        maps = Path("/proc/self/maps").read_text().splitlines()
        mapped = sorted({line.split()[-1] for line in maps if f"/{CACHE_DIR}/" in line})
        (self.out / f"rank{trainer.global_rank}.txt").write_text("\n".join(mapped))


def train(run_cli, data: Path, run_dir: Path, *overrides: str):
    return run_cli("train.py", "data=tiny", f"data.dir={data}", "data.collect=false",
                   "model.hidden_size=16", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}",
                   *overrides)


def fresh_copy(tiny_data: Path, where: Path) -> Path:
    return shutil.copytree(tiny_data, where, ignore=shutil.ignore_patterns(CACHE_DIR))


def test_train_refuses_a_corrupt_cache_in_one_line(run_cli, tiny_data, tmp_path):
    data = fresh_copy(tiny_data, tmp_path / "tiny")
    load(data)
    (build,) = builds(data)
    (data / CACHE_DIR / build / "actions.float32").write_bytes(b"")
    proc = train(run_cli, data, tmp_path / "run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "actions.float32 has 0 bytes" in line, line
    assert len(episode_files(data)) == len(episode_files(tiny_data))


@pytest.mark.slow
def test_ddp_processes_train_from_one_shared_cache(run_cli, tiny_data, tmp_path):
    data = fresh_copy(tiny_data, tmp_path / "tiny")
    proc = train(run_cli, data, tmp_path / "run", "trainer=ddp",
                 "+callbacks.maps._target_=tests.test_data_cache.RecordCacheMaps",
                 f"+callbacks.maps.out={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (build,) = builds(data)  # built once, no temporary build left behind
    maps = [(tmp_path / f"rank{rank}.txt").read_text().split() for rank in (0, 1)]
    frames_file = str(data / CACHE_DIR / build / "frames.uint8")
    assert frames_file in maps[0] and frames_file in maps[1]  # both ranks read the one copy


@pytest.mark.slow
def test_cache_and_memory_train_to_the_same_test_mse(run_cli, tiny_data, tmp_path):
    import json

    data = fresh_copy(tiny_data, tmp_path / "tiny")
    mse = {}
    for cache in ("true", "false"):
        proc = train(run_cli, data, tmp_path / cache, f"data.cache={cache}",
                     "trainer.max_epochs=2")
        assert proc.returncode == 0, proc.stderr[-3000:]
        mse[cache] = json.loads((tmp_path / cache / "results.json").read_text())["test_mse"]
    assert mse["true"] == mse["false"], mse


# -- filesystem faults: real tmpfs mounts (root only; skipped elsewhere) -----------------------


def test_a_full_disk_during_a_build_is_named_and_leaves_no_cache(mount):  # noqa: F811
    directory = write_counting_dataset(mount("size=64k") / "data", [200, 200], size=16)
    with pytest.raises(UserError, match=r"^data.cache: cannot build .*No space left on device"):
        load(directory)
    assert builds(directory) == [] and len(episode_files(directory)) == 2


def test_a_read_only_dataset_without_a_cache_is_named_and_trains_with_cache_false(mount):  # noqa: F811
    where = mount("size=1m")
    directory = write_counting_dataset(where / "data", [20, 20, 20])
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    with pytest.raises(UserError, match=r"^data.cache: .*Read-only file system.*data.cache=false"):
        load(directory)
    dm = CarRacingDataModule(str(directory), seq_len=5, split=[0.6, 0.2, 0.2], collect=False,
                             cache=False)
    dm.prepare_data()
    dm.setup()
    assert len(dm.datasets["train"]) == 4
