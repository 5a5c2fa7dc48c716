"""A run killed mid-epoch and resumed into a new run directory ends as if never interrupted.

Real train.py processes on the tiny data; the kill is a SIGKILL, as a lost machine would be.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import ROOT, compose_config, train_here
from world_models.errors import UserError

# lr=0.01 makes validation loss rise after epoch 1 (best-epoch001 of 4): a resume that forgot
# its best would pick a later epoch and test another model.
# The best epoch by val/loss is tested (experiment=flow_ss: the flow warp, scheduled sampling),
# and at this learning rate it comes early, so the resume must carry the best checkpoint over.
RUN = ("experiment=flow_ss", "data=tiny", "data.collect=false", "model.hidden_size=16",
       "model.lr=0.01", "trainer.max_epochs=4")


def train_args(tiny_data, outputs: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "train.py", *RUN, f"data.dir={tiny_data}",
            f"paths.log_dir={outputs}", f"hydra.run.dir={outputs / 'train' / name}", *extra]


def last_epoch(run_dir: Path) -> int | None:
    """The epoch of run_dir's last.ckpt, or None while it is missing or half written."""
    try:
        return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    except Exception:
        return None


def kill_mid_epoch(args, env, run_dir: Path, epoch: int) -> None:
    """Run until batch 2 of `epoch` starts, then end the process as SIGKILL would. The crash
    callback is the test's, not the run's: it is taken out of the run's stored config, so the
    run looks as a user's killed run does."""
    crash = ["+callbacks.crash._target_=tests.helpers.CrashAtEpoch",
             f"+callbacks.crash.epoch={epoch}", "+callbacks.crash.batch=2"]
    proc = subprocess.run([*args, *crash], cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    stored = run_dir / ".hydra" / "config.yaml"
    config = yaml.safe_load(stored.read_text())
    del config["callbacks"]["crash"]
    stored.write_text(yaml.safe_dump(config))


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_killed_run_resumed_by_ckpt_path_last_equals_the_uninterrupted_run(
        tiny_data, cli_env, tmp_path):
    """The uninterrupted run in this process; the killed and the resumed one by the command
    line."""
    outputs = tmp_path / "outputs"
    kill_mid_epoch(train_args(tiny_data, outputs, "killed"), cli_env,
                   outputs / "train" / "killed", epoch=2)
    resumed_at = last_epoch(outputs / "train" / "killed")
    train_here(outputs / "train" / "whole", *RUN, f"data.dir={tiny_data}",
               f"paths.log_dir={outputs}")
    assert not (outputs / "train" / "killed" / "results.json").exists()
    # A newer interrupted run of another config must not be the one resumed.
    other = outputs / "train" / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / ".hydra").mkdir()
    config = yaml.safe_load((outputs / "train" / "killed" / ".hydra" / "config.yaml").read_text())
    config["model"]["lr"] = 0.02
    (other / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (other / "checkpoints" / "last.ckpt").write_bytes(b"not this one")

    resumed = subprocess.run(train_args(tiny_data, outputs, "resumed", "ckpt_path=last"),
                             cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    killed_last = outputs / "train" / "killed" / "checkpoints" / "last.ckpt"
    assert f"ckpt_path=last: resuming {killed_last}" in resumed.stdout

    expected, got = results(outputs / "train" / "whole"), results(outputs / "train" / "resumed")
    best_epoch = int(Path(expected["checkpoint"]).stem.removeprefix("best-epoch"))
    assert best_epoch <= resumed_at < 3  # the best is behind the resume; epochs are left
    assert got["test_mse"] == expected["test_mse"]
    assert got["best_val_mse"] == expected["best_val_mse"]
    assert Path(got["checkpoint"]).parent == outputs / "train" / "resumed" / "checkpoints"
    assert Path(got["checkpoint"]).name == Path(expected["checkpoint"]).name


def test_ckpt_path_last_without_an_interrupted_run_is_refused(tiny_data, tmp_path):
    """In this process, on the real train.yaml: nothing under paths.log_dir to resume."""
    from world_models.training import train

    outputs = tmp_path / "outputs"
    cfg = compose_config("train", *RUN, f"data.dir={tiny_data}", f"paths.log_dir={outputs}",
                         f"paths.output_dir={outputs / 'train' / 'first'}", "ckpt_path=last")
    with pytest.raises(UserError) as err:
        train(cfg)
    assert str(err.value).startswith("ckpt_path=last: no interrupted run")
    assert str(outputs) in str(err.value) and "\n" not in str(err.value)
