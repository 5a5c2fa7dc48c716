"""Windows of episodes and their batches: uint8 until the device, then float."""

import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from world_models.data.episodes import Episode


class WindowDataset(Dataset):
    """Windows frames[s:s+L], actions[s:s+L] of each episode, starts s = 0, stride, ...

    A tail shorter than a window is dropped rather than zero-padded: padding
    would teach the model to predict black frames. Frames stay uint8, in memory or in the
    cache's map, and leave as uint8: they become float on the training device (float_batch).
    """

    def __init__(self, episodes: list[Episode], seq_len: int, stride: int):
        self.seq_len = seq_len
        self.frames = [as_tensor(ep.frames) for ep in episodes]  # [T+1, H, W, 3]
        self.actions = [as_tensor(ep.actions) for ep in episodes]  # [T, 3]
        self.index = [
            (e, start)
            for e, ep in enumerate(episodes)
            for start in range(0, ep.steps - seq_len + 1, stride)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, start = self.index[i]
        stop = start + self.seq_len
        return {
            "frames": self.frames[e][start:stop],  # [L, H, W, 3] uint8, as stored
            "actions": self.actions[e][start:stop],  # [L, 3]
        }

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A batch's windows at once (the DataLoader's fetcher calls this when it exists): one
        stack per key instead of a dict per window and a collate, 1.5x the windows/s here."""
        windows = [self.index[i] for i in indices]
        stop = self.seq_len
        return {
            "frames": torch.stack([self.frames[e][s : s + stop] for e, s in windows]),
            "actions": torch.stack([self.actions[e][s : s + stop] for e, s in windows]),
        }


def stacked(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The collate of a batch WindowDataset.__getitems__ already stacked."""
    return batch


class EpochSampler(torch.utils.data.Sampler):
    """A shuffle drawn from (seed, epoch) alone, so a resumed run sees the same order.

    Lightning calls set_epoch at the start of each epoch; under DDP it wraps this
    sampler in a distributed one that splits the order between processes.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing `array`'s memory, also when it is a read-only map of the cache."""
    with warnings.catch_warnings():  # torch warns that writes would be undefined; none happen
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(array)


def to_float_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [0, 1]."""
    return frames.movedim(-1, -3).float().div_(255.0)


def float_batch(batch: dict) -> dict:
    """A loader's batch, frames uint8 [B, L, H, W, 3] -> float [B, L, 3, H, W] in [0, 1],
    on whatever device it is. The channels move in the one copy the conversion makes anyway,
    so the loader's collate is a plain copy of stored bytes."""
    frames = batch["frames"].movedim(-1, -3).to(torch.float32,
                                                  memory_format=torch.contiguous_format)
    return {**batch, "frames": frames.div_(255.0)}
