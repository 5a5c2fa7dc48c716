"""Behaviour policies that drive the car while episodes are recorded.

What the policy does decides what a model can learn: a car that stands still
teaches nothing about motion.
"""

import numpy as np

from world_models.data.episodes import ACTION_HIGH, ACTION_LOW
from world_models.errors import UserError


class BrownianPolicy:
    """next action = clip(previous action + Gaussian noise), per action component.

    The World Models paper collected CarRacing this way with noise sqrt(1/50) on
    all three components; measured here that brakes to a standstill for long
    stretches, so the default noise is larger on steering and smaller on braking.
    """

    def __init__(self, rng: np.random.Generator, sigma=(0.2, 0.1, 0.01), start=(0.0, 0.5, 0.0)):
        self.rng = rng
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.action = np.asarray(start, dtype=np.float64)

    def __call__(self) -> np.ndarray:
        self.action = np.clip(
            self.action + self.rng.normal(0.0, self.sigma), ACTION_LOW, ACTION_HIGH
        )
        return self.action.astype(np.float32)


class UniformPolicy:
    """Independent uniform random actions; the car mostly jitters in place."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self) -> np.ndarray:
        return self.rng.uniform(ACTION_LOW, ACTION_HIGH).astype(np.float32)


def scripted_drive(steps: int, seed: int) -> list[np.ndarray]:
    """A fixed test drive: brownian steering with gas, coast and brake phases of 40 steps.

    Tests and benchmarks replay it to exercise steering and braking alike.
    """
    rng = np.random.default_rng(seed)
    steer, actions = 0.0, []
    for t in range(steps):
        steer = float(np.clip(steer + rng.normal(0.0, 0.3), -1.0, 1.0))
        phase = (t // 40) % 3
        gas = rng.uniform(0.5, 1.0) if phase == 0 else rng.uniform(0.0, 0.3)
        brake = rng.uniform(0.3, 1.0) if phase == 2 else 0.0
        actions.append(np.array([steer, gas, brake], dtype=np.float32))
    return actions


POLICIES = {"brownian": BrownianPolicy, "uniform": UniformPolicy}


def make_policy(config: dict, rng: np.random.Generator):
    """Build a policy from its config: {'name': ..., **parameters}."""
    params = dict(config)
    name = params.pop("name", None)
    if name not in POLICIES:
        raise UserError(f"policy.name: unknown policy '{name}'; available: {', '.join(POLICIES)}")
    try:
        return POLICIES[name](rng, **params)
    except TypeError as err:
        raise UserError(f"policy: bad parameters for '{name}': {err}") from None
