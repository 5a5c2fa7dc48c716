"""trainer.precision=bf16-mixed on CPU: the default model's first steps on the tiny data lose
what fp32 loses, within bfloat16's precision, from uint8 batches converted on the device."""

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from tests.helpers import ROOT
from world_models.data.datamodule import CarRacingDataModule
from world_models.models.world_model import WorldModel

STEPS = 4


class RecordLosses(Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def train_losses(cfg, precision: str) -> list[float]:
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = CarRacingDataModule.from_config(cfg)
    datamodule.setup("fit")
    model = WorldModel(**cfg.model, frame_shape=datamodule.frame_shape,
                       protocol=cfg.train.protocol, input_noise=cfg.train.input_noise,
                       scheduled_sampling=OmegaConf.to_container(cfg.train.scheduled_sampling),
                       open_loop=OmegaConf.to_container(cfg.train.open_loop))
    record = RecordLosses()
    trainer = L.Trainer(accelerator="cpu", precision=precision, max_steps=STEPS,
                        limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[record])
    trainer.fit(model, datamodule=datamodule)
    return record.losses


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's notes on CPU autocast, workers
def test_bf16_mixed_trains_the_default_model_as_fp32_does(tiny_data):
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=["data=tiny", f"data.dir={tiny_data}",
                                          "data.collect=false", "model.hidden_size=32"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32, bf16 = train_losses(cfg, "32-true"), train_losses(cfg, "bf16-mixed")
    finally:
        torch.set_num_threads(threads)
    assert len(fp32) == len(bf16) == STEPS
    assert fp32 != bf16  # autocast really ran in bfloat16 (8 bits of mantissa)
    torch.testing.assert_close(torch.tensor(bf16), torch.tensor(fp32), rtol=0.03, atol=0)
