"""FastCarRacing must produce exactly the bytes stock CarRacing-v3 produces."""

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np  # noqa: E402
import pygame  # noqa: E402
import pytest  # noqa: E402
from gymnasium.wrappers import TimeLimit  # noqa: E402

from world_models.data.policies import scripted_drive  # noqa: E402
from world_models.envs import FastCarRacing, make_env  # noqa: E402
from world_models.envs import car_racing as fast_module  # noqa: E402


def _assert_same_episode(stock, fast, seed: int, steps: int) -> None:
    obs_s, _ = stock.reset(seed=seed)
    obs_f, _ = fast.reset(seed=seed)
    assert np.array_equal(obs_s, obs_f), "reset observation differs"
    for t, action in enumerate(scripted_drive(steps, seed)):
        obs_s, rew_s, term_s, trunc_s, _ = stock.step(action)
        obs_f, rew_f, term_f, trunc_f, _ = fast.step(action)
        assert np.array_equal(obs_s, obs_f), f"seed {seed}: observation differs at step {t}"
        assert (rew_s, term_s, trunc_s) == (rew_f, term_f, trunc_f), f"seed {seed}, step {t}"
        if term_s or trunc_s:
            break


@pytest.mark.parametrize(
    ("seed", "domain_randomize"), [(0, False), (1, False), (2, False), (3, True)]
)
def test_fast_env_is_byte_identical_to_stock(seed, domain_randomize):
    stock = make_env("stock", domain_randomize=domain_randomize)
    fast = make_env("fast", domain_randomize=domain_randomize)
    try:
        _assert_same_episode(stock, fast, seed, steps=300)
        # A second reset builds a new track; cached canvases must not leak state.
        _assert_same_episode(stock, fast, seed + 100, steps=60)
    finally:
        stock.close()
        fast.close()


def test_background_fill_shortcut_matches_stock_polygon():
    """Random camera poses, many with the playfield edge near the screen."""
    env = FastCarRacing(domain_randomize=True)  # float colours, like randomised runs
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    used = 0
    for _ in range(150):
        zoom, angle = rng.choice([1.0, 8.0, 16.2]), rng.uniform(-7.0, 7.0)
        radius = rng.uniform(0.85, 1.05) * fast_module._B * zoom
        phi = rng.uniform(0, 2 * np.pi)
        trans = (500 + radius * np.cos(phi), 200 + radius * np.sin(phi))
        # Stock _draw_colored_polygon draws on env.surf, whatever surface it is given.
        env.surf = expected = pygame.Surface((fast_module.W, fast_module.H))
        env._draw_colored_polygon(
            expected, fast_module._FIELD, env.bg_color, zoom, trans, angle, clip=False
        )
        env.surf = pygame.Surface((fast_module.W, fast_module.H))
        env.surf.fill((1, 2, 3))
        if env._background_covers_screen(zoom, trans, angle):
            used += 1
            got, want = pygame.surfarray.array2d(env.surf), pygame.surfarray.array2d(expected)
            assert np.array_equal(got, want)
    env.close()
    assert 10 <= used <= 140  # both the shortcut and the fallback were exercised


def test_observation_dtype_shape_and_time_limit():
    for kind in ("fast", "stock"):
        env = make_env(kind)
        obs, _ = env.reset(seed=0)
        assert obs.dtype == np.uint8 and obs.shape == (96, 96, 3)
        assert isinstance(env, TimeLimit) and env.spec.max_episode_steps == 1000
        env.close()


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="collect.env"):
        make_env("nope")
