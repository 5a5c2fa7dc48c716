"""The shipped configs: the default and the course setups compose as documented, every
experiment composes into a valid setting, and one real training run (in this process) turns
every model option on."""

import csv
import json
import math

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers import ROOT, train_here
from world_models.errors import UserError
from world_models.models.world_model import WorldModel
from world_models.training import check_config


def test_a_run_with_every_option(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    results = train_here(run_dir, "data=tiny", f"data.dir={tiny_data}", "data.collect=false",
                         "model.hidden_size=16", "model=transformer", "model.encoder=conv",
                         "model.residual=true", "model.warp=flow", "model.l1_weight=0.1",
                         "train.scheduled_sampling.schedule=linear", "train.open_loop.horizon=0",
                         "train.input_noise=0.01", "trainer.max_epochs=1",
                         "trainer.log_every_n_steps=1")
    assert results == json.loads((run_dir / "results.json").read_text())
    assert results["core"] == "transformer" and math.isfinite(results["test_mse"])
    model = WorldModel.load_from_checkpoint(results["checkpoint"], map_location="cpu")
    assert (model.hparams.encoder, model.hparams.residual, model.hparams.warp) == ("conv", True,
                                                                                  "flow")
    assert model.hparams.scheduled_sampling["schedule"] == "linear"
    with open(run_dir / "csv" / "metrics.csv") as f:
        probs = {int(r["step"]): float(r["train/teacher_forcing_prob"])
                 for r in csv.DictReader(f) if r.get("train/teacher_forcing_prob")}
    # p(true frame) 1 -> 0 over train.yaml's decay: 0.6 of this run's optimizer steps
    decay_steps = max(1, round(0.6 * results["optimizer_steps"]))
    assert probs and probs == pytest.approx(
        {step: max(0.0, 1 - step / decay_steps) for step in probs})


@pytest.mark.parametrize("overrides,expected", [
    # the open-loop study's winner: the fade and the still gate, trained on its own rollouts
    # of 150 steps
    ([], ("builtin", "flow", True, True, "bptt", "none", 150, 151, 14)),
    (["experiment=task1"], ("builtin", "none", False, False, "per_step", "none", 0, None, 50)),
    (["experiment=task2"], ("scratch", "none", False, False, "per_step", "none", 0, None, 50)),
    (["experiment=flow_ss"], ("builtin", "flow", False, False, "bptt", "linear", 0, None, 30)),
    (["model=scratch"], ("scratch", "none", False, False, "bptt", "none", 150, 151, 14)),
])
def test_default_config_is_the_winner_and_the_course_setups_stay(overrides, expected):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    schedule = cfg.train.scheduled_sampling.schedule
    got = (cfg.model.core, cfg.model.warp, cfg.model.fade, cfg.model.still,
           cfg.train.protocol, schedule,
           cfg.train.open_loop.horizon, cfg.data.train_seq_len, cfg.trainer.max_epochs)
    assert got == expected
    check_config(cfg)  # and each is a valid setting


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob(
    "*.yaml")))
def test_every_shipped_experiment_composes_and_is_valid(name):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        check_config(compose("train", overrides=[f"experiment={name}"]))


def test_a_schedule_the_per_step_loop_cannot_draw_is_refused():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=task1",
                                          "train.scheduled_sampling.schedule=linear"])
    with pytest.raises(UserError, match="^train.scheduled_sampling.schedule: needs "
                                        "train.protocol=bptt"):
        check_config(cfg)


def test_the_sweep_grid_is_a_config_file():
    """make sweep runs train.py -m sweep=cores: the grid is conf/sweep/cores.yaml's."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["sweep=cores"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {"model.core": "builtin,scratch", "seed": "0,1,2"}
    assert cfg.group == "sweep"
    assert "sweep=cores" in (ROOT / "Makefile").read_text()
