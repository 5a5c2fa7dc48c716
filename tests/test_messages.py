"""Messages that name the right thing: each bad input is refused naming what is wrong with it."""

import os
import shlex
import subprocess

import pytest

from tests.helpers import ROOT
from world_models.callbacks import RolloutCallback
from world_models.checkpointing import check_checkpoint_file
from world_models.data.convert import load_course_pickle
from world_models.data.episodes import read_episode
from world_models.errors import UserError
from world_models.evaluation import load_model


@pytest.mark.parametrize("check", [load_model, lambda path: check_checkpoint_file(path, "ckpt")])
def test_a_checkpoint_that_is_a_directory_or_text_is_named_so(tmp_path, check):
    with pytest.raises(UserError, match=f"^ckpt: '{tmp_path}' is a directory, expected a"):
        check(tmp_path)
    text = tmp_path / "notes.ckpt"
    text.write_text("epoch 3 was the best\n")
    with pytest.raises(UserError, match=f"^ckpt: '{text}' is not a checkpoint \\(not the zip"):
        check(text)
    with pytest.raises(UserError, match=f"^ckpt: '{tmp_path / 'nope.ckpt'}' does not exist$"):
        check(tmp_path / "nope.ckpt")


def test_a_text_file_named_npz_is_not_offered_allow_pickle(tmp_path):
    text = tmp_path / "episode_00000.npz"
    text.write_text("frames,actions,rewards\n")
    with pytest.raises(UserError, match="not a zip archive") as err:
        read_episode(text)
    assert "pickle" not in str(err.value)


def test_the_converters_input_being_a_directory_is_named_so(tmp_path):
    with pytest.raises(UserError, match=f"^IN.pkl: '{tmp_path}' is a directory"):
        load_course_pickle(tmp_path)


@pytest.mark.parametrize("horizon", [0, 1])
def test_rollout_horizon_too_short_names_the_horizon(horizon):
    message = f"^callbacks.rollout.horizon: expected >= 2, got {horizon}"
    with pytest.raises(UserError, match=message):
        RolloutCallback(horizon=horizon)


def test_make_keeps_a_path_with_a_space_one_argument():
    # Not the make running this suite (make test): its MAKEFLAGS would reach this one.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(["make", "-n", "--no-print-directory", "evaluate",
                           "CKPT=runs/a b/last.ckpt", "data.dir=x y", "rollout.horizon=5"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    command = shlex.split(proc.stdout.strip().splitlines()[-1])  # as the shell splits it
    assert command[1] == "evaluate.py"
    assert sorted(command[2:]) == ["ckpt=runs/a b/last.ckpt", "data.dir=x y", "rollout.horizon=5"]


def test_make_passes_environment_words_to_the_environment_not_to_hydra():
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(["make", "-n", "--no-print-directory", "train", "WANDB_MODE=offline",
                           "SDL_VIDEODRIVER=dummy", "model=scratch"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    command = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert command[1:] == ["train.py", "model=scratch"]
