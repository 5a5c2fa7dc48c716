"""The rollout callback inside real training runs (the real train.yaml, in this process) on the
tiny real dataset (see conftest.py).

Tiny episodes have 30 steps and one of them is the validation split, so the default horizon
(50) is capped to 30 there; hidden_size=16 keeps each run to its start-up and a few seconds.
"""

import csv
import math

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import ROOT, compose_config
from world_models import plots
from world_models.callbacks import RolloutCallback
from world_models.data.datamodule import CarRacingDataModule
from world_models.errors import UserError
from world_models.models.world_model import WorldModel
from world_models.training import build_callbacks

CELL = 32 * plots.SCALE + plots.PAD


def grid_size(horizon: int) -> tuple[int, int]:
    return (plots.LABEL_WIDTH + len(plots.grid_steps(horizon)) * CELL, plots.HEADER + 4 * CELL)


@pytest.fixture(scope="module")
def train(tiny_data):
    """train(run_dir, *overrides): training.train on the real train.yaml in this process."""
    from world_models.training import train as train_here

    def run(run_dir, *overrides):
        train_here(compose_config("train", "data=tiny", f"data.dir={tiny_data}",
                                  "data.collect=false", "model.hidden_size=16",
                                  f"paths.output_dir={run_dir}", *overrides))
        return run_dir

    return run


def test_csv_run_writes_pngs_and_the_scalar_every_k_epochs(train, tmp_path):
    run_dir = train(tmp_path / "run", "trainer.max_epochs=4", "callbacks.rollout.every_n_epochs=2",
                    "callbacks.rollout.horizon=20")
    # After epochs 2 and 4 (0-based 1 and 3); not after the sanity check nor epochs 1 and 3.
    assert sorted(p.name for p in (run_dir / "rollouts").iterdir()) == [
        "epoch001_grid.png", "epoch001_loss.png", "epoch003_grid.png", "epoch003_loss.png"]
    for epoch in ("001", "003"):
        with Image.open(run_dir / "rollouts" / f"epoch{epoch}_grid.png") as grid:
            assert grid.format == "PNG" and grid.size == grid_size(20)
        with Image.open(run_dir / "rollouts" / f"epoch{epoch}_loss.png") as curve:
            assert curve.format == "PNG" and curve.size == (700, 450)
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["val/rollout_mse_ar"]]
    assert [int(r["epoch"]) for r in rows] == [1, 3]
    assert all(math.isfinite(float(r["val/rollout_mse_ar"])) for r in rows)
    assert rows[0]["val/loss"]  # logged with the validation epoch, on its row


def test_tensorboard_run_holds_the_images(train, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = train(tmp_path / "run", "trainer.max_epochs=1", "logger=tensorboard",
                    "callbacks.rollout.every_n_epochs=1")  # default horizon 50: capped to 30
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"rollout/grid", "rollout/loss"} <= set(events.Tags()["images"]), events.Tags()
    (grid,) = events.Images("rollout/grid")
    assert (grid.width, grid.height) == grid_size(30)
    assert "val/rollout_mse_ar" in events.Tags()["scalars"]
    assert (run_dir / "rollouts" / "epoch000_grid.png").is_file()  # PNGs whatever the logger


def compose_train(tmp_path, *overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])


def test_turned_off_it_writes_nothing(tiny_data, tmp_path):
    assert "rollout" not in compose_train(tmp_path, "~callbacks.rollout").callbacks
    cfg = compose_train(tmp_path, "callbacks.rollout.every_n_epochs=0")
    dm = CarRacingDataModule(str(tiny_data), seq_len=5, batch_size=4, split=[0.6, 0.2, 0.2],
                             collect=False)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[c for c in build_callbacks(cfg)
                                                  if isinstance(c, RolloutCallback)])
    trainer.fit(WorldModel(hidden_size=8), datamodule=dm)
    assert not (tmp_path / "rollouts").exists()


@pytest.mark.parametrize("override,message", [
    ("callbacks.rollout.context=0", "callbacks.rollout.context: expected 1 <= context"),
    ("callbacks.rollout.every_n_epochs=-1", "callbacks.rollout.every_n_epochs: expected >= 0"),
])
def test_bad_settings_name_the_key(tmp_path, override, message):
    with pytest.raises(UserError, match=f"^{message}"):
        build_callbacks(compose_train(tmp_path, override))


class WorseningModel(L.LightningModule):
    """val/loss grows every epoch, so the best epoch is the first and never the last."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=4)


def test_last_ckpt_is_the_final_epoch_when_the_best_is_earlier(tmp_path):
    cfg = compose_train(tmp_path, "checkpoint_monitor=val/loss")
    checkpoints = [c for c in build_callbacks(cfg) if isinstance(c, ModelCheckpoint)]
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False, callbacks=checkpoints,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(WorseningModel())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best-epoch000.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, trainer.global_step) == (2, 6)
