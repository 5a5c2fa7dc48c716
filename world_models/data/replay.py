"""Put the simulator back where a recorded episode starts, to drive it again another way.

A collected episode file stores seed = [dataset seed, episode index]; from it collection drew
the track (the env seed) and the behaviour policy's actions, including those of the skipped
zoom frames that the file does not keep. The dataset's card.json records the policy and the
number of skipped frames. Replaying both gives the state behind the episode's first frame,
byte for byte (checked against the file), from which any other actions can be tried.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from world_models.data.episodes import read_episode
from world_models.data.policies import make_policy
from world_models.data.recording import downsample, episode_rngs
from world_models.errors import UserError


@dataclass
class EpisodeStart:
    """How to reach the first recorded frame of an episode."""

    env_seed: int
    warmup_actions: np.ndarray  # [skip_frames, 3] the policy's actions over the zoom frames
    first_frame: np.ndarray  # [H, W, 3] uint8, the episode's frames[0]
    resolution: int
    env_kind: str
    name: str


def episode_start(path) -> EpisodeStart:
    """Read what the replay needs from an episode file and its dataset's card.json."""
    path = Path(path)
    episode = read_episode(path)
    with np.load(path, allow_pickle=False) as npz:
        if "seed" not in npz.files:
            raise UserError(f"{path}: no 'seed' key (not collected by world_models.collect), "
                            "so its track cannot be rebuilt in the simulator")
        seed, index = (int(v) for v in npz["seed"])
    card_path = path.parent / "card.json"
    if not card_path.is_file():
        raise UserError(f"{card_path}: missing; it records the policy and skipped frames the "
                        "simulator needs to reach the episode's start (make data writes it)")
    card = json.loads(card_path.read_text())
    env_seed, rng = episode_rngs(seed, index)
    policy = make_policy(card["policy"], rng)
    warmup = np.stack([policy() for _ in range(card["skip_frames"])]) if card["skip_frames"] \
        else np.zeros((0, 3), np.float32)
    return EpisodeStart(env_seed, warmup, episode.frames[0], int(card["resolution"]),
                        card.get("env", "fast"), path.stem)


class Replay:
    """The simulator at an episode's start; reset() goes back there, step() drives on.

    Frames come downsampled to the dataset's resolution, as the model sees them.
    """

    def __init__(self, start: EpisodeStart, env):
        self.start, self.env = start, env

    def reset(self) -> np.ndarray:
        """Rebuild the track and replay the zoom frames; return the first frame [H, W, 3]."""
        obs, _ = self.env.reset(seed=self.start.env_seed)
        for action in self.start.warmup_actions:
            obs, *_ = self.env.step(action)
        frame = downsample(obs, self.start.resolution)
        if not np.array_equal(frame, self.start.first_frame):
            raise UserError(f"{self.start.name}: the simulator does not reproduce the episode's "
                            "first frame (collected with another gymnasium or card.json?)")
        return frame

    def step(self, action) -> tuple[np.ndarray, bool]:
        """Drive one step; return the next frame [H, W, 3] and whether the episode ended."""
        obs, _, terminated, truncated, _ = self.env.step(np.asarray(action, np.float32))
        return downsample(obs, self.start.resolution), terminated or truncated

    def drive(self, actions: np.ndarray) -> np.ndarray:
        """From the start, take `actions` [T, 3]; return frames [T'+1, H, W, 3], T' <= T
        (fewer if the episode ends, e.g. the car leaves the playfield)."""
        frames = [self.reset()]
        for action in actions:
            frame, ended = self.step(action)
            frames.append(frame)
            if ended:
                break
        return np.stack(frames)
