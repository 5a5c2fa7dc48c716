"""make dream: the simulator replayed from an episode's seed, the scripted manoeuvres through the
real dream.py command line, and the interactive window driven headless by injected keys."""

import json
import subprocess

import gymnasium as gym
import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import ROOT, compose_config
from world_models.data.episodes import episode_files, read_episode
from world_models.data.replay import Replay, episode_start
from world_models.dream import dream, dream_and_drive
from world_models.envs import make_env
from world_models.errors import UserError
from world_models.evaluation import load_model


@pytest.fixture(scope="module")
def ckpt(tiny_run):
    """A small model trained for one epoch on the tiny data (its run remembers data.dir)."""
    return tiny_run / "checkpoints" / "last.ckpt"


class RecordActions(gym.Wrapper):
    """The actions that reach the simulator."""

    def __init__(self, env):
        super().__init__(env)
        self.actions = []

    def step(self, action):
        self.actions.append(np.asarray(action, np.float32).copy())
        return self.env.step(action)


def test_replay_rebuilds_a_collected_episode_byte_for_byte(tiny_data):
    path = episode_files(tiny_data)[2]
    replay = Replay(episode_start(path), make_env())
    episode = read_episode(path)
    assert np.array_equal(replay.drive(episode.actions), episode.frames)


def test_replay_reaches_the_start_of_an_episode_the_pilot_drove(run_cli, tmp_path):
    """The pilot reads the simulator, but not over the zoom frames: a replay reaches its
    episodes' first frame from the seed and card alone, and their actions drive it on."""
    proc = run_cli("-m", "world_models.collect", "data=tiny", "policy=pilot",
                   "data.num_episodes=1", f"data.dir={tmp_path / 'pilot'}", "collect.workers=1",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = episode_files(tmp_path / "pilot")[0]
    episode = read_episode(path)
    assert np.array_equal(Replay(episode_start(path), make_env()).drive(episode.actions),
                          episode.frames)


def test_make_dream_script_writes_the_gif_grid_and_summary(cli_env, ckpt, tmp_path):
    actions = np.column_stack([np.linspace(-1, 1, 8), np.full(8, 0.3), np.zeros(8)])
    csv = tmp_path / "zigzag.csv"
    csv.write_text("steer,gas,brake\n" + "\n".join(",".join(map(str, a)) for a in actions))
    out = tmp_path / "dream"
    proc = subprocess.run(["make", "-s", "dream", f"CKPT={ckpt}", "mode=script", "steps=12",
                           f"actions_file={csv}", f"hydra.run.dir={out}"], cwd=ROOT,
                          env=cli_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "dream.json").read_text())
    assert list(report["manoeuvres"]) == ["straight", "left", "right", "brake", "zigzag"]
    assert report["manoeuvres"]["left"]["steps"] == 12
    assert report["manoeuvres"]["zigzag"]["steps"] == 8
    assert set(report["spread"]) == {"step_5"}  # steps 10, 25, 50 lie past the shortest (8)
    assert "how far the model's manoeuvres part" in proc.stdout
    gif = Image.open(out / "dream.gif")
    assert gif.n_frames == 8  # the shortest manoeuvre
    gif.seek(0)
    assert gif.width > 5 * 128  # a column per manoeuvre, frames upscaled
    grid = Image.open(out / "dream_grid.png")
    assert grid.height > 10 * 128  # two rows per manoeuvre


def test_spread_is_the_mean_pairwise_mse_of_the_manoeuvres_frames():
    """Three manoeuvres whose simulator frames are 0, 0.1 and 0.3 everywhere at step 5: the
    pairs' MSEs are 0.01, 0.09 and 0.04. The model paints one film for all: spread 0."""
    from world_models.dream import format_spread, spread

    def run(value):
        real = torch.zeros(11, 3, 4, 4)
        real[5] = value
        return real, torch.full((10, 3, 4, 4), 0.5)

    table = spread({"a": run(0.0), "b": run(0.1), "c": run(0.3)}, steps=(5, 10, 25))
    assert list(table) == ["step_5", "step_10"]
    assert table["step_5"]["simulator"] == pytest.approx((0.01 + 0.09 + 0.04) / 3)
    assert table["step_5"]["model"] == 0.0 and table["step_10"]["simulator"] == 0.0
    assert "step 5 0x" in format_spread(table)
    table["step_5"]["model"] = 0.0012 * table["step_5"]["simulator"]  # parting, a little
    assert "step 5 0.0012x" in format_spread(table)


def test_manoeuvres_drive_the_simulator_and_the_model_differently(ckpt, tiny_data):
    model = load_model(ckpt)
    replay = Replay(episode_start(episode_files(tiny_data)[0]), make_env())
    left = np.tile([-1.0, 0.5, 0.0], (15, 1)).astype(np.float32)
    right = np.tile([1.0, 0.5, 0.0], (15, 1)).astype(np.float32)
    real_left, dream_left = dream_and_drive(model, replay, left)
    real_right, dream_right = dream_and_drive(model, replay, right)
    assert torch.equal(real_left[0], real_right[0])  # the same start
    assert (real_left[-1] - real_right[-1]).abs().mean() > 0.01  # the car turned both ways
    assert not torch.equal(dream_left[-1], dream_right[-1])  # the model was told


BAD = [
    (["mode=nope"], "mode: expected one of script, interactive"),
    (["episode=99"], "episode: expected 0 <= episode <"),
    (["actions_file=missing.npy"], "actions_file: 'missing.npy' does not exist"),
    (["manoeuvres.left=[-2,0,0]"], "manoeuvres.left: action [-2.0, 0.0, 0.0] at step 0"),
    (["mode=interactive"], "mode: interactive found no display (SDL video driver 'dummy')"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[o[0] for o, _ in BAD])
def test_bad_input_is_refused_naming_it(ckpt, tiny_data, tmp_path, override, message):
    """The real dream.yaml composed in this process (the data: the run's, as dream.py takes
    it), each case a one-line UserError."""
    cfg = compose_config("dream", f"ckpt={ckpt}", "data=tiny", f"data.dir={tiny_data}",
                         f"paths.output_dir={tmp_path}", *override)
    with pytest.raises(UserError) as err:
        dream(cfg, video_driver="dummy")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bad_input_is_refused_in_one_line_by_the_cli(run_cli, ckpt, tmp_path):
    proc = run_cli("dream.py", f"ckpt={ckpt}", "mode=nope", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "error: mode: expected one of script, interactive, got 'nope'"]


def test_interactive_keys_reach_the_model_and_the_simulator(ckpt, tiny_data):
    import pygame

    from world_models.dream_window import BRAKE, open_window, run_window

    model = load_model(ckpt)
    start = episode_start(episode_files(tiny_data)[1])
    env = RecordActions(make_env())
    replay = Replay(start, env)
    to_model = []
    model.register_forward_pre_hook(lambda m, args: to_model.append(args[1][0, -1].clone()))

    def key(kind, name):
        return pygame.event.Event(kind, key=name)

    down, up = pygame.KEYDOWN, pygame.KEYUP
    inject = {0: [key(down, pygame.K_LEFT), key(down, pygame.K_UP)],
              3: [key(up, pygame.K_LEFT), key(up, pygame.K_UP), key(down, pygame.K_RIGHT),
                  key(down, pygame.K_DOWN)],
              5: [key(down, pygame.K_r)]}  # R: back to the start
    screen = open_window(model.frame_shape, 2, "dummy", max_frames=7)
    actions = run_window(screen, model, replay, scale=2, fps=1000, max_frames=7, inject=inject)

    expected = [[-1, 1, 0]] * 3 + [[1, 0, BRAKE]] * 4
    np.testing.assert_allclose(np.stack(actions), expected)
    np.testing.assert_allclose(torch.stack(to_model).numpy(), expected)
    warmup = list(start.warmup_actions)
    # The simulator: the zoom frames replayed, 5 steps, the restart's replay, 2 more steps.
    np.testing.assert_allclose(np.stack(env.actions),
                               np.stack(warmup + expected[:5] + warmup + expected[5:]))
