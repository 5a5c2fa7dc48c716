"""Behaviour policies: what each one does to the car, on the real simulator where it matters."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.helpers import compose_config
from world_models.data.policies import PhasedPolicy, make_policy
from world_models.data.recording import episode_rngs
from world_models.errors import UserError


def test_phases_drive_coast_and_brake_in_runs():
    policy = PhasedPolicy(np.random.default_rng(0), phases=(1, 1, 1), phase_steps=(5, 5))
    actions = np.stack([policy() for _ in range(300)])
    gas, brake = actions[:, 1], actions[:, 2]
    assert not np.any((gas > 0) & (brake > 0))  # never both at once
    kinds = np.where(gas > 0, 0, np.where(brake > 0, 2, 1))
    runs = kinds.reshape(-1, 5)  # phases of exactly 5 steps: one kind per row
    assert np.all(runs == runs[:, :1])
    assert set(kinds.tolist()) == {0, 1, 2}
    assert brake[brake > 0].min() >= 0.3 and np.all(np.abs(actions[:, 0]) <= 1)


def test_a_mix_picks_one_policy_per_episode_from_the_episode_seed():
    config = OmegaConf.to_container(compose_config("collect", "policy=mix").policy)
    names = [type(make_policy(config, episode_rngs(0, i)[1])).__name__ for i in range(40)]
    assert set(names) == {"BrownianPolicy", "PhasedPolicy"}
    again = [type(make_policy(config, episode_rngs(0, i)[1])).__name__ for i in range(40)]
    assert names == again
    first = make_policy(config, episode_rngs(0, 3)[1])
    second = make_policy(config, episode_rngs(0, 3)[1])
    assert np.array_equal(np.stack([first() for _ in range(20)]),
                          np.stack([second() for _ in range(20)]))


@pytest.mark.parametrize("config, message", [
    ({"name": "mix", "components": []}, "policy.components: a mix needs at least one policy"),
    ({"name": "mix", "components": [{"name": "mix", "components": [{"name": "uniform"}]}]},
     "policy.components: a mix cannot contain a mix"),
    ({"name": "mix", "components": [{"name": "phases", "bogus": 1}]},
     "policy: bad parameters for 'phases'"),
])
def test_bad_mixes_are_refused_naming_the_key(config, message):
    with pytest.raises(UserError, match=message):
        make_policy(config, np.random.default_rng(0))


def test_fidget_phases_press_both_pedals_at_levels_that_vary():
    four = PhasedPolicy(np.random.default_rng(1), phases=(0, 0, 0, 1), phase_steps=(5, 5))
    actions = np.stack([four() for _ in range(200)])
    gas, brake = actions[:, 1], actions[:, 2]
    assert np.mean((gas > 0) & (brake > 0)) > 0.95  # both at once, at levels that vary
    assert gas.std() > 0.2 and brake.std() > 0.2


def test_slalom_weaves_with_one_period_per_episode():
    policy = make_policy({"name": "slalom", "period": [40, 40], "amplitude": [1, 1]},
                         np.random.default_rng(3))
    actions = np.stack([policy() for _ in range(200)])
    steer = actions[:, 0]
    assert np.allclose(steer[:160], steer[40:200], atol=1e-5)  # periodic, 40 steps
    assert steer.max() > 0.9 and steer.min() < -0.9 and np.all(actions[:, 2] == 0)


def car_speed(policy, steps=120, seed=5):
    """Mean speed of the car body over `steps` of the real simulator under `policy`."""
    from world_models.envs import make_env
    env = make_env("fast")
    env.reset(seed=seed)
    speeds = []
    for _ in range(steps):
        env.step(policy())
        speeds.append(float(np.linalg.norm(env.unwrapped.car.hull.linearVelocity)))
    env.close()
    return float(np.mean(speeds[40:]))


def test_fidgeting_moves_the_car_less_than_driving_on_the_simulator():
    drive = PhasedPolicy(np.random.default_rng(4), phases=(1, 0, 0, 0), steer_sigma=0.05)
    fidget = PhasedPolicy(np.random.default_rng(4), phases=(0, 0, 0, 1), steer_sigma=0.05)
    assert car_speed(fidget) < 0.5 * car_speed(drive)


@pytest.mark.parametrize("phases", [(1, 1), (1, 1, 1, 1, 1), (1, -1, 1), (0, 0, 0)])
def test_bad_phases_are_refused_naming_the_key(phases):
    with pytest.raises(UserError, match=r"^policy.phases: expected 3 or 4 probabilities"):
        make_policy({"name": "phases", "phases": list(phases)}, np.random.default_rng(0))


def distance_to_road(policy, steps=150, skip=50, seed=7) -> list[float]:
    """The car's distance from the track's centre line at each recorded step of the real
    simulator, driven by `policy` as collection drives it (observed from the first recorded
    step on)."""
    from world_models.envs import make_env
    env = make_env("fast")
    env.reset(seed=seed)
    observe = getattr(policy, "observe", None)
    points = np.asarray([(x, y) for *_, x, y in env.unwrapped.track])
    distances = []
    for t in range(skip + steps):
        if t >= skip and observe is not None:
            observe(env)
        env.step(policy())
        position = np.asarray(env.unwrapped.car.hull.position)
        if t >= skip:
            distances.append(float(np.sqrt(((points - position) ** 2).sum(1)).min()))
    env.close()
    return distances


def test_the_pilot_keeps_to_the_road_where_blind_driving_leaves_it():
    """On the real simulator: steering by what it observes, the pilot stays about the road (the
    track is ~13 units wide; it cuts a corner by a few) while the same policy never observing
    drives straight on and off the road (measured: mean 2.9 and at most 7.9 units from the
    centre line, against up to 181)."""
    config = {"name": "pilot", "speed": [25, 25], "wander": 0.0}
    pilot = distance_to_road(make_policy(config, np.random.default_rng(1)))
    blind = make_policy(config, np.random.default_rng(1))
    blind.observe = None  # never sees the car: drives straight on
    straight = distance_to_road(blind)
    assert np.mean(pilot) < 4.0 and max(pilot) < 12.0, pilot
    assert max(straight) > 3 * max(pilot), straight


def test_the_pilot_draws_its_parameters_per_episode_and_drives_blind_before_it_observes():
    """Before its first observation (the zoom frames, which a replay drives without the
    simulator's state) it goes straight on, drawing from its generator as it will later."""
    first, second = (make_policy({"name": "pilot"}, np.random.default_rng(s)) for s in (0, 1))
    assert (first.speed, first.gain) != (second.speed, second.gain)
    actions = np.stack([first() for _ in range(5)])
    assert np.all(actions == np.array([0.0, 0.5, 0.0], np.float32))
