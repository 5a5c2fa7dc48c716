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


class PhasedPolicy:
    """Stop-and-go driving: phases of `phase_steps` (a random length in that range) of driving,
    coasting, braking and, with a fourth probability in `phases`, fidgeting (both pedals at
    random levels every step, as a nervous or a random driver presses them), with brownian
    steering throughout.

    It shows a model what the brownian policy rarely does: hard braking, a car standing still,
    and gas and brake pressed together. With three probabilities there is no fidgeting, and the
    draws are those of the three-phase policy.
    """

    KINDS = ("drive", "coast", "brake", "fidget")

    def __init__(self, rng: np.random.Generator, phases=(0.5, 0.2, 0.3), phase_steps=(20, 80),
                 steer_sigma: float = 0.2):
        if len(phases) not in (3, 4) or min(phases) < 0 or sum(phases) <= 0:
            raise UserError(f"policy.phases: expected 3 or 4 probabilities >= 0 of "
                            f"{', '.join(self.KINDS)}, got {list(phases)}")
        self.rng = rng
        self.p = np.asarray(phases, dtype=np.float64) / np.sum(phases)
        self.phase_steps = (int(phase_steps[0]), int(phase_steps[1]))
        self.steer_sigma = float(steer_sigma)
        self.steer, self.left, self.kind = 0.0, 0, "drive"

    def __call__(self) -> np.ndarray:
        if self.left == 0:
            self.kind = self.KINDS[self.rng.choice(len(self.p), p=self.p)]
            self.left = int(self.rng.integers(self.phase_steps[0], self.phase_steps[1] + 1))
        self.left -= 1
        self.steer = float(np.clip(self.steer + self.rng.normal(0.0, self.steer_sigma), -1, 1))
        if self.kind == "fidget":
            gas, brake = self.rng.uniform(0.0, 1.0, size=2)
        else:
            gas = self.rng.uniform(0.3, 1.0) if self.kind == "drive" else 0.0
            brake = self.rng.uniform(0.3, 1.0) if self.kind == "brake" else 0.0
        return np.array([self.steer, gas, brake], dtype=np.float32)


class SlalomPolicy:
    """Weaving at a steady speed: steering follows a sine of a period and an amplitude drawn per
    episode (in `period` steps and `amplitude`), gas held near a level drawn in `gas`, no brake.
    A steering pattern no other policy here shows: held-out data for a model trained on them."""

    def __init__(self, rng: np.random.Generator, period=(30, 120), amplitude=(0.3, 1.0),
                 gas=(0.1, 0.5)):
        self.rng = rng
        self.period = rng.uniform(*period)
        self.amplitude = rng.uniform(*amplitude)
        self.phase = rng.uniform(0.0, 2 * np.pi)
        self.gas = rng.uniform(*gas)
        self.t = 0

    def __call__(self) -> np.ndarray:
        steer = self.amplitude * np.sin(2 * np.pi * self.t / self.period + self.phase)
        gas = np.clip(self.gas + self.rng.normal(0.0, 0.05), 0.0, 1.0)
        self.t += 1
        return np.array([steer, gas, 0.0], dtype=np.float32)


class PilotPolicy:
    """Drives along the road: steers towards the track a few tiles ahead of the nearest one
    (pure pursuit) and holds a speed, both drawn per episode, with a brownian wander added to
    the steering, so the car weaves, cuts corners and sometimes leaves the road and finds it
    again. It reads the car and the track (``observe``, called by collection with the env
    before each recorded step); before its first observation (the zoom frames) it drives
    straight on, so a replay reaches an episode's start without it.
    """

    def __init__(self, rng: np.random.Generator, speed=(15.0, 45.0), lookahead=(2, 8),
                 gain=(1.0, 3.0), wander: float = 0.1):
        self.rng = rng
        self.speed = rng.uniform(*speed)
        self.lookahead = int(rng.integers(lookahead[0], lookahead[1] + 1))
        self.gain = rng.uniform(*gain)
        self.wander_sigma = float(wander)
        self.wander, self.seen = 0.0, None

    def observe(self, env) -> None:
        """Read where the car is, where it heads, how fast, and where the road goes."""
        car, track = env.unwrapped.car.hull, env.unwrapped.track
        position = np.asarray(car.position, dtype=np.float64)
        points = np.asarray([(x, y) for *_, x, y in track], dtype=np.float64)  # [N, 2]
        nearest = int(np.argmin(((points - position) ** 2).sum(1)))
        target = points[(nearest + self.lookahead) % len(points)] - position
        heading = car.angle + np.pi / 2  # the hull's forward axis is its local +y
        error = np.arctan2(target[1], target[0]) - heading
        self.seen = (float(np.arctan2(np.sin(error), np.cos(error))),  # wrapped to [-pi, pi]
                     float(np.hypot(*car.linearVelocity)))

    def __call__(self) -> np.ndarray:
        self.wander = float(np.clip(self.wander + self.rng.normal(0.0, self.wander_sigma), -1, 1))
        noise = self.rng.normal(0.0, 0.05)
        if self.seen is None:
            return np.array([0.0, 0.5, 0.0], dtype=np.float32)
        error, speed = self.seen
        steer = np.clip(-self.gain * error + self.wander, -1.0, 1.0)  # steer > 0 turns right
        gas = np.clip(0.1 * (self.speed - speed) + noise, 0.0, 1.0)
        brake = 0.3 if speed > 1.3 * self.speed else 0.0
        return np.array([steer, gas, brake], dtype=np.float32)


def mixed_policy(rng: np.random.Generator, components=()):
    """One of `components` (policy configs, each with a `weight`) per episode, drawn from the
    episode's own generator, so an episode's policy depends on (seed, index) alone."""
    if not components:
        raise UserError("policy.components: a mix needs at least one policy")
    weights = np.asarray([c.get("weight", 1.0) for c in components], dtype=np.float64)
    chosen = dict(components[rng.choice(len(components), p=weights / weights.sum())])
    chosen.pop("weight", None)
    if chosen.get("name") == "mix":
        raise UserError("policy.components: a mix cannot contain a mix")
    return make_policy(chosen, rng)


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


POLICIES = {"brownian": BrownianPolicy, "uniform": UniformPolicy, "phases": PhasedPolicy,
            "slalom": SlalomPolicy, "pilot": PilotPolicy, "mix": mixed_policy}


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
