"""One CarRacing episode recorded with a behaviour policy: what a collection worker does, and
what replay (data/replay.py) redoes from an episode's seed and card, for `make dream`.

Episode i draws every random number from (seed, i) alone (``episode_rngs``), so its bytes do
not depend on the worker, the order or the machine that recorded it.
"""

from dataclasses import dataclass, field

import numpy as np

from world_models.data.policies import make_policy

OBS_SIZE = 96  # CarRacing's observation is 96x96x3


@dataclass
class CollectSpec:
    """Everything a worker needs to record episode i."""

    dir: str
    episode_steps: int = 300
    skip_frames: int = 50
    resolution: int = 32
    policy: dict = field(default_factory=lambda: {"name": "brownian"})
    env: str = "fast"
    seed: int = 0


def episode_rngs(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """The env seed and the policy's generator of episode `index`, from (seed, index) alone."""
    env_seq, policy_seq = np.random.SeedSequence([seed, index]).spawn(2)
    return int(env_seq.generate_state(1)[0]), np.random.default_rng(policy_seq)


def downsample(frame: np.ndarray, resolution: int) -> np.ndarray:
    """Area-average a [96, 96, 3] uint8 frame to [resolution, resolution, 3] uint8."""
    k = OBS_SIZE // resolution
    blocks = frame.reshape(resolution, k, resolution, k, 3).astype(np.float32)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def record_episode(env, spec: CollectSpec, index: int) -> dict:
    """Drive one episode and return its arrays (frames downsampled, zoom skipped)."""
    env_seed, rng = episode_rngs(spec.seed, index)
    policy = make_policy(spec.policy, rng)
    obs, _ = env.reset(seed=env_seed)
    frames, actions, rewards = [], [], []
    # The camera zooms in over the first second (50 frames) of every episode;
    # those frames show an animation, not driving, so they are not recorded.
    observe = getattr(policy, "observe", None)  # a policy that reads the simulator
    for t in range(spec.skip_frames + spec.episode_steps):
        recording = t >= spec.skip_frames
        if recording and observe is not None:
            observe(env)
        action = policy()
        if recording:
            frames.append(downsample(obs, spec.resolution))
            actions.append(action)
        obs, reward, terminated, truncated, _ = env.step(action)
        if recording:
            rewards.append(reward)
        if terminated or truncated:
            break
    frames.append(downsample(obs, spec.resolution))
    if not actions:
        raise RuntimeError(f"episode {index} ended during the {spec.skip_frames} skipped frames")
    return {
        "frames": np.stack(frames),  # [T+1, H, W, 3]
        "actions": np.stack(actions),  # [T, 3]
        "rewards": np.asarray(rewards, dtype=np.float32),  # [T]
        "env_steps": t + 1,
    }
