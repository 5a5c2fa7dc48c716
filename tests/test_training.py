"""world_models.training in this process, on the real train.yaml and the tiny real dataset
(conftest.py): both cores learn, and every bad setting is refused in one line naming its key,
before anything is built. The command line's side of the contract is in test_train.py."""

import pytest

from tests.helpers import compose_config
from world_models.errors import UserError, composition_error

SMALL = ("model.hidden_size=16", "checkpoint_monitor=val/loss")

BAD = [
    # (overrides, what the one-line message must contain)
    (["model.core=nope"], ["model.core", "builtin", "scratch"]),
    (["model.lr=0"], ["model.lr"]),
    (["model.hidden_size=0"], ["model.hidden_size"]),
    (["data.seq_len=1"], ["data.seq_len"]),
    (["trainer.max_epochs=0"], ["trainer.max_epochs"]),
    (["train.protocol=nope"], ["train.protocol", "bptt", "per_step"]),
    (["ckpt_path=/nonexistent.ckpt"], ["ckpt_path", "/nonexistent.ckpt"]),
    (["data.split=[0.8,0.2,0.0]"], ["data.split", "test share is 0"]),
    (["data.split=[0,0.5,0.5]"], ["data.split", "train share is 0"]),
    (["data.seq_len=abc"], ["data.seq_len", "expected an integer", "'abc'"]),
    (["model.lr=abc"], ["model.lr", "expected a number", "'abc'"]),
    (["seed=abc"], ["seed", "expected an integer", "'abc'"]),
    (["model.fade=maybe"], ["model.fade", "expected true or false", "'maybe'"]),
    (["data.num_workers=-1"], ["data.num_workers", ">= 0"]),
    (["ckpt_path=/tmp"], ["ckpt_path", "'/tmp' is a directory"]),
    (["ckpt_path=/etc/passwd"], ["ckpt_path", "is not a checkpoint"]),
    (["+model.bogus=1"], ["model.bogus", "no such setting", "hidden_size"]),
]


def train_here(tiny_data, tmp_path, *overrides: str):
    """training.train on the real train.yaml composed in this process with `overrides`."""
    from world_models.training import train

    return train(compose_config("train", "data=tiny", f"data.dir={tiny_data}",
                                "data.collect=false", f"paths.output_dir={tmp_path}", *SMALL,
                                *overrides))


@pytest.mark.parametrize("overrides,words", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_refused_naming_the_key(tiny_data, tmp_path, overrides, words):
    with pytest.raises(UserError) as err:
        train_here(tiny_data, tmp_path, *overrides)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("core,protocol",
                         [("builtin", "bptt"), ("scratch", "bptt"), ("scratch", "per_step")])
def test_training_reduces_the_train_loss(tiny_data, core, protocol):
    import lightning as L
    import torch

    from world_models.data.datamodule import CarRacingDataModule, float_batch
    from world_models.models.world_model import WorldModel

    L.seed_everything(0, verbose=False)
    dm = CarRacingDataModule(str(tiny_data), seq_len=5, batch_size=4, split=[0.6, 0.2, 0.2],
                             collect=False)
    dm.setup("fit")
    model = WorldModel(core=core, hidden_size=16, lr=1e-3, frame_shape=dm.frame_shape,
                       protocol=protocol)

    def train_loss() -> float:
        with torch.no_grad():
            losses = [model.window_loss(float_batch(batch)).item()
                      for batch in dm.train_dataloader()]
        return sum(losses) / len(losses)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CLI runs of this module share the 2 cores meanwhile
    try:
        before = train_loss()
        trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0)
        trainer.fit(model, datamodule=dm)
        after = train_loss()
    finally:
        torch.set_num_threads(threads)
    assert after < 0.9 * before, (before, after)


@pytest.mark.parametrize("overrides,words", [
    (["model=nope"], ["Could not find 'model/nope'", "builtin", "scratch", "imagine"]),
    (["model.bogus=1"], ["model.bogus: no such setting"]),
    (["model.hiden_size=64"], ["model.hiden_size: no such setting; did you mean "
                               "model.hidden_size?"]),
    (["trainer.max_epoch=3"], ["did you mean trainer.max_epochs?"]),
    (["model.lr=["], ["'model.lr=['"]),
])
def test_a_config_hydra_cannot_compose_is_named_in_one_line(overrides, words):
    from hydra.errors import HydraException

    with pytest.raises(HydraException) as err:
        compose_config("train", *overrides)
    line = composition_error(err.value)
    assert "\n" not in line
    for word in words:
        assert word in line, (word, line)
    assert ("did you mean" in line) == any("did you mean" in word for word in words)


def test_checkpoint_of_another_size_does_not_fit(tiny_run, tiny_data, tmp_path):
    # tiny_run: the default model with model.hidden_size=16
    with pytest.raises(UserError, match="^ckpt_path: .* does not fit"):
        train_here(tiny_data, tmp_path, "model.hidden_size=32",
                   f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}")


def test_bad_setting_is_refused_before_any_data_is_collected(tmp_path):
    data_dir = tmp_path / "never"
    cfg = compose_config("train", f"data.dir={data_dir}", "model.hidden_size=0",
                         f"paths.output_dir={tmp_path}")
    from world_models.training import train

    with pytest.raises(UserError, match="^model.hidden_size"):
        train(cfg)
    assert not data_dir.exists()
