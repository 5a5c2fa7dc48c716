"""Windows, splits and batches served by CarRacingDataModule."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import write_counting_dataset
from world_models.data.datamodule import CarRacingDataModule, split_episodes
from world_models.data.episodes import episode_files
from world_models.errors import UserError


def datamodule(directory, **kw) -> CarRacingDataModule:
    dm = CarRacingDataModule(str(directory), seed=0, collect=False, **kw)
    dm.prepare_data()
    dm.setup()
    return dm


def test_window_counts_drop_the_short_tail(tmp_path):
    # 10 episodes of 23 steps: windows of 5 at stride 5 start at 0, 5, 10, 15 (20 + 5 > 23)
    dm = datamodule(write_counting_dataset(tmp_path, [23] * 10), seq_len=5)
    counts = {name: len(ds) for name, ds in dm.datasets.items()}
    assert counts == {"train": 8 * 4, "val": 4, "test": 4}
    overlapping = datamodule(tmp_path, seq_len=5, stride=2)  # starts 0, 2, ..., 18
    assert len(overlapping.datasets["train"]) == 8 * 10


def test_frames_and_actions_stay_aligned(tmp_path):
    dm = datamodule(write_counting_dataset(tmp_path, [17] * 10), seq_len=4, stride=3)
    for item in dm.datasets["train"]:
        frames, actions = item["frames"], item["actions"]  # [L, H, W, 3] uint8, [L, 3]
        assert frames.shape == (4, 4, 4, 3) and actions.shape == (4, 3)
        frame_values = frames[:, 0, 0, 0].float()  # uint8: the values as written
        steps = actions[:, 1] * 256  # frame t = offset + t, action t = [0, t / 256, 0]
        episode_offset = frame_values[0] - steps[0]
        assert torch.equal(frame_values, (episode_offset + steps) % 256)
        assert torch.equal(steps[1:] - steps[:-1], torch.ones(3))


def test_batches_are_uint8_until_the_device_and_memory_stays_uint8(tmp_path):
    dm = datamodule(write_counting_dataset(tmp_path, [30] * 10, size=8), seq_len=6, batch_size=3)
    loaded = next(iter(dm.train_dataloader()))
    assert loaded["frames"].shape == (3, 6, 8, 8, 3) and loaded["frames"].dtype == torch.uint8
    batch = dm.on_after_batch_transfer(loaded, 0)  # what Lightning hands the model
    assert batch["frames"].shape == (3, 6, 3, 8, 8) and batch["frames"].dtype == torch.float32
    assert batch["frames"].is_contiguous()
    assert torch.equal(batch["frames"], loaded["frames"].movedim(-1, -3).float() / 255)
    assert 0 <= batch["frames"].min() and batch["frames"].max() <= 1
    assert batch["actions"].shape == (3, 6, 3)
    assert all(f.dtype == torch.uint8 for f in dm.datasets["train"].frames)


def test_shuffle_depends_on_seed_and_epoch_only(tmp_path):
    dm = datamodule(write_counting_dataset(tmp_path, [30] * 10), seq_len=3)

    def order(epoch):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return list(loader.sampler)

    assert order(1) == order(1) and order(1) != order(2)


def test_split_is_by_episode_deterministic_and_complete():
    parts = split_episodes(20, [0.8, 0.1, 0.1], seed=3)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [16, 2, 2]
    assert sorted(sum(parts.values(), [])) == list(range(20))
    assert parts == split_episodes(20, [0.8, 0.1, 0.1], seed=3)
    assert parts != split_episodes(20, [0.8, 0.1, 0.1], seed=4)


def test_whole_sequences_for_rollouts(tmp_path):
    dm = datamodule(write_counting_dataset(tmp_path, [12, 40, 25, 30, 33] * 2), seq_len=5)
    long = dm.sequences("train", min_steps=30)
    assert long and all(s["actions"].shape[0] >= 30 for s in long)
    assert all(s["frames"].shape[0] == s["actions"].shape[0] + 1 for s in long)


def test_mean_frame(tmp_path):
    dm = datamodule(write_counting_dataset(tmp_path, [5] * 10), seq_len=2)
    values = np.concatenate([ep.frames[:, 0, 0, 0] for ep in dm.episodes["train"]])
    assert dm.mean_frame().shape == (3, 4, 4)
    assert dm.mean_frame()[0, 0, 0].item() == pytest.approx(values.mean() / 255, rel=1e-5)


def test_prepare_data_collects_when_the_directory_is_missing(tmp_path, capsys):
    cfg = OmegaConf.create({
        "seed": 0,
        "data": {"dir": str(tmp_path / "new"), "num_episodes": 3, "episode_steps": 8,
                 "skip_frames": 2, "resolution": 32, "seed": 0},
        "policy": {"name": "brownian"},
        "collect": {"workers": 1, "env": "fast", "shard": 0, "num_shards": 1},
    })
    dm = CarRacingDataModule(cfg.data.dir, seq_len=4, split=[0.34, 0.33, 0.33],
                             collect_config=cfg)
    dm.prepare_data()
    assert "collected 3 episodes" in capsys.readouterr().out
    dm.prepare_data()  # as the Trainer calls it again after train.py: nothing to say twice
    assert capsys.readouterr().out == ""
    dm.setup()
    assert len(episode_files(tmp_path / "new")) == 3
    assert dm.frame_shape == (3, 32, 32)
    cfg.data.num_episodes = 4  # the same settings, more episodes: only the missing one
    before = {f.name: f.stat().st_mtime_ns for f in episode_files(tmp_path / "new")}
    CarRacingDataModule(cfg.data.dir, seq_len=4, collect_config=cfg).prepare_data()
    after = {f.name: f.stat().st_mtime_ns for f in episode_files(tmp_path / "new")}
    assert len(after) == 4 and all(after[name] == t for name, t in before.items())


@pytest.mark.parametrize(
    "lengths, kwargs, message",
    [
        ([8] * 10, {"seq_len": 9}, "data.seq_len: 9 is longer than every train episode"),
        ([8] * 10, {"seq_len": 1}, "data.seq_len: expected >= 2"),
        ([8] * 10, {"stride": 0}, "data.stride: expected >= 1"),
        ([8] * 2, {}, "data.split: 2 episodes cannot fill"),
        ([8] * 10, {"split": [0.5, 0.5]}, "data.split: expected three fractions"),
        ([8] * 10, {"split": [0, 0.5, 0.5]}, "data.split: the train share is 0"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, lengths, kwargs, message):
    write_counting_dataset(tmp_path, lengths)
    with pytest.raises(UserError) as err:
        datamodule(tmp_path, **{"seq_len": 4, **kwargs})
    assert message in str(err.value)


def test_missing_or_empty_directory_with_collection_off(tmp_path):
    with pytest.raises(UserError, match="does not exist and data.collect=false"):
        datamodule(tmp_path / "nope")
    with pytest.raises(UserError, match=r"holds no episode files \(\*.npz\) and data.collect"):
        datamodule(tmp_path)
