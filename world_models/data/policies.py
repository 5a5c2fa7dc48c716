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
