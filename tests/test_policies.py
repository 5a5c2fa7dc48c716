"""Behaviour policies: what each one does to the car, on the real simulator where it matters."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.helpers import compose_config
from world_models.data.collection import episode_rngs
from world_models.data.policies import PhasedPolicy, make_policy
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
