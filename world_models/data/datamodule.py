"""Episodes on disk -> windows of `seq_len` frames with their actions, as batches."""

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from world_models.data.cache import cached_episodes
from world_models.data.episodes import Episode, dataset_files, episode_files, load_dataset
from world_models.data.windows import (  # noqa: F401  (to_float_frames, float_batch: importers)
    EpochSampler,
    WindowDataset,
    as_tensor,
    float_batch,
    stacked,
    to_float_frames,
)
from world_models.errors import UserError

SPLITS = ("train", "val", "test")


def check_split(fractions, needs=("train",)) -> list[float]:
    """The train/val/test fractions as floats; refuse them unless each split in `needs` has a
    share (train.py needs train and test; validation may be empty)."""
    try:
        fractions = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise UserError(f"data.split: expected three fractions, got {fractions}") from None
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise UserError(f"data.split: expected three fractions >= 0 summing to 1, got {fractions}")
    for name in needs:
        if fractions[SPLITS.index(name)] == 0:
            raise UserError(f"data.split: the {name} share is 0 in {fractions}, but this command "
                            f"needs {name} episodes (e.g. data.split=[0.8,0.1,0.1])")
    return fractions


def split_episodes(count: int, fractions, seed: int) -> dict[str, list[int]]:
    """Assign episode indices to train/val/test by a seeded shuffle.

    Splitting by episode keeps the test set's tracks out of training; each
    non-zero fraction gets at least one episode.
    """
    fractions = check_split(fractions)
    order = np.random.default_rng(seed).permutation(count).tolist()
    n_val = max(round(fractions[1] * count), int(fractions[1] > 0))
    n_test = max(round(fractions[2] * count), int(fractions[2] > 0))
    n_train = count - n_val - n_test
    if n_train < 1:
        raise UserError(
            f"data.split: {count} episodes cannot fill train/val/test {fractions}; "
            f"collect more (data.num_episodes) or change data.split"
        )
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


class CarRacingDataModule(L.LightningDataModule):
    def __init__(
        self,
        dir: str,
        seq_len: int = 10,
        stride: int | None = None,
        batch_size: int = 16,
        split=(0.8, 0.1, 0.1),
        seed: int = 0,
        num_workers: int = 0,
        collect: bool = True,
        collect_config=None,
        train_seq_len: int | None = None,
        train_stride: int | None = None,
        cache: bool = True,
    ):
        super().__init__()
        if not isinstance(cache, bool):
            raise UserError(f"data.cache: expected true or false, got '{cache}'")
        if seq_len < 2:
            raise UserError(
                f"data.seq_len: expected >= 2 (a frame and its successor), got {seq_len}"
            )
        stride = seq_len if stride is None else stride
        if stride < 1:
            raise UserError(f"data.stride: expected >= 1, got {stride}")
        if train_stride is None:  # as the val/test windows, or no overlap of the long ones
            train_stride = stride if train_seq_len is None else train_seq_len
        train_seq_len = seq_len if train_seq_len is None else train_seq_len
        if train_seq_len < 2:
            raise UserError(f"data.train_seq_len: expected >= 2, got {train_seq_len}")
        if train_stride < 1:
            raise UserError(f"data.train_stride: expected >= 1, got {train_stride}")
        # Long training windows (open-loop training) with val/test windows as before, so the
        # one-step test MSE stays comparable across training options.
        self.windows = {"train": (train_seq_len, train_stride), "val": (seq_len, stride),
                        "test": (seq_len, stride)}
        if batch_size < 1:
            raise UserError(f"data.batch_size: expected >= 1, got {batch_size}")
        if num_workers < 0:
            raise UserError(f"data.num_workers: expected >= 0 (0 = load in this process), "
                            f"got {num_workers}")
        self.dir = Path(dir)
        self.seq_len, self.stride, self.batch_size = seq_len, stride, batch_size
        self.split, self.seed, self.num_workers = split, seed, num_workers
        self.collect, self.collect_config, self.cache = collect, collect_config, cache
        self.episodes: dict[str, list[Episode]] = {}
        self.datasets: dict[str, WindowDataset] = {}
        self.prepared = False  # train.py prepares before the Trainer does: once is enough

    @classmethod
    def from_config(cls, cfg) -> "CarRacingDataModule":
        """Build from the composed config; `cfg.data`, `cfg.policy` and `cfg.collect` are read."""
        d = cfg.data
        return cls(
            dir=d.dir,
            seq_len=d.seq_len,
            stride=d.stride,
            batch_size=d.batch_size,
            split=list(d.split),
            seed=d.seed,
            num_workers=d.num_workers,
            collect=d.collect,
            collect_config=cfg,
            train_seq_len=d.get("train_seq_len"),
            train_stride=d.get("train_stride"),
            cache=d.get("cache", True),
        )

    def prepare_data(self) -> None:
        """Collect the dataset on first use, so the main command works on a fresh clone, and
        the missing episodes of one we collected (a card.json); others are read as they are."""
        from world_models.data.card import read_card

        if self.prepared:
            return
        has_episodes = self.dir.is_dir() and bool(episode_files(self.dir))
        collecting = self.collect and self.collect_config is not None
        if not has_episodes and not collecting:
            where = ("does not exist" if not self.dir.exists() else
                     "is a file, expected a directory," if not self.dir.is_dir() else
                     "holds no episode files (*.npz)")
            raise UserError(f"data.dir: '{self.dir}' {where} and data.collect=false")
        if collecting and (not has_episodes or read_card(self.dir) is not None):
            from world_models.data.collection import collect_from_config

            collect_from_config(self.collect_config)
        if self.cache:  # built here once per machine (Lightning's local rank 0), read by all
            cached_episodes(self.dir, dataset_files(self.dir))
        self.prepared = True

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        episodes = (cached_episodes(self.dir, dataset_files(self.dir)) if self.cache
                    else load_dataset(self.dir))
        parts = split_episodes(len(episodes), self.split, self.seed)
        for name in SPLITS:
            self.episodes[name] = [episodes[i] for i in parts[name]]
            seq_len, stride = self.windows[name]
            self.datasets[name] = WindowDataset(self.episodes[name], seq_len, stride)
            if self.episodes[name] and not len(self.datasets[name]):
                longest = max(ep.steps for ep in self.episodes[name])
                key = "data.train_seq_len" if name == "train" and seq_len != self.seq_len \
                    else "data.seq_len"
                raise UserError(f"{key}: {seq_len} is longer than every {name} episode "
                                f"(longest: {longest} steps)")
        if not len(self.datasets["train"]):
            raise UserError(f"data.split: the train split of '{self.dir}' is empty")

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """[3, H, W] of the frames."""
        h, w, c = self.episodes["train"][0].frames.shape[1:]
        return (c, h, w)

    def mean_frame(self) -> torch.Tensor:
        """The mean training frame, float [3, H, W]: the 'learns nothing' baseline."""
        total = sum(ep.frames.astype(np.float64).sum(axis=0) for ep in self.episodes["train"])
        count = sum(len(ep.frames) for ep in self.episodes["train"])
        return torch.from_numpy(total / count / 255.0).float().permute(2, 0, 1)

    def sequences(self, split: str = "test", min_steps: int = 1) -> list[dict[str, torch.Tensor]]:
        """Whole episodes of a split with at least `min_steps` steps, for rollouts.

        frames float [T+1, 3, H, W], actions [T, 3].
        """
        return [
            {
                "frames": to_float_frames(as_tensor(ep.frames)),
                "actions": as_tensor(ep.actions),
                "name": ep.name,
            }
            for ep in self.episodes[split]
            if ep.steps >= min_steps
        ]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        sampler = EpochSampler(len(dataset), self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=stacked,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.on_gpu(),
        )

    def on_gpu(self) -> bool:
        """Whether a Trainer is training on a GPU: then pinned batches copy asynchronously."""
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Frames cross to the device as uint8, a quarter of float32's bytes, and become float
        there (Lightning calls this hook on the device's batch)."""
        return float_batch(batch)

    def train_dataloader(self) -> DataLoader:
        # trainer.overfit_batches (debug=overfit) trains on the first batches, in order
        overfitting = bool(getattr(self.trainer, "overfit_batches", 0)) if self.trainer else False
        return self._loader("train", shuffle=not overfitting)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
