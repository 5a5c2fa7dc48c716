"""The model's settings are one object (models/hparams.py: ModelSettings): model.* of the config
is its fields, their types are what a mistyped value is refused against, and a checkpoint
stores them and is rebuilt from them, as it was before the object existed."""

import pytest
import torch
import yaml

from tests.helpers import ROOT, compose_config
from world_models.evaluation import load_model
from world_models.models.hparams import MODEL_KEYS, ModelSettings, model_types
from world_models.models.world_model import WorldModel
from world_models.settings import types

# A checkpoint's hyper_parameters as WorldModel wrote them before ModelSettings (keys, order
# and values of the default model of that day, at hidden_size 16, on 16x16 frames).
STORED = {
    "core": "builtin", "hidden_size": 16, "lr": 0.0003, "frame_shape": (3, 16, 16),
    "action_size": 3, "protocol": "bptt", "encoder": "pooled", "residual": False,
    "warp": "flow", "l1_weight": 0.0,
    "scheduled_sampling": {"schedule": "none", "start": 1.0, "end": 0.0, "decay": 0.6,
                           "decay_steps": None, "k": None},
    "input_noise": 0.0, "gate": False,
    "open_loop": {"horizon": 50, "context": 1, "warmup": 0.5, "warmup_window": 10,
                  "ramp": 0.05, "tf_weight": 10.0, "detach": False},
    "ssim_weight": 0.02, "own_steps_input": True, "fill": False, "fade": True,
    "fade_lr_scale": 30.0, "latent": "none", "latent_size": 16, "kl_weight": 1e-05,
    "kl_warmup": 0.5,
}


def test_the_model_config_is_the_settings_fields_with_their_defaults():
    builtin = yaml.safe_load((ROOT / "conf" / "model" / "builtin.yaml").read_text())
    assert set(builtin) == set(MODEL_KEYS) - {"action_size"}  # the data fixes the actions
    defaults = ModelSettings()
    assert {key: getattr(defaults, key) for key in builtin} == builtin


def test_the_settings_types_are_the_ones_refused_against():
    assert model_types()["model.hidden_size"] is int and model_types()["model.fade"] is bool
    checked = types()
    assert checked["model.lr"] == "a number" and checked["model.gate"] == "true or false"
    assert "model.core" not in checked  # a name: checked against its choices by check()


def test_settings_from_the_config_hold_what_the_model_takes_from_train():
    cfg = compose_config("train", "model.hidden_size=16", "train.input_noise=0.01")
    settings = ModelSettings.from_config(cfg, frame_shape=[3, 32, 32])
    assert settings.hidden_size == 16 and settings.input_noise == 0.01
    assert settings.frame_shape == (3, 32, 32) and settings.open_loop["horizon"] == 150
    model = WorldModel(settings)
    assert model.settings is settings and dict(model.hparams) == settings.as_dict()
    with pytest.raises(TypeError, match="not both"):
        WorldModel(settings, hidden_size=8)


def test_a_checkpoint_stored_before_the_settings_object_loads(tmp_path):
    torch.manual_seed(0)
    model = WorldModel(**STORED)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(STORED),
                "pytorch-lightning_version": "2.6.6"}, path)
    loaded = load_model(path)
    assert loaded.settings == ModelSettings(**STORED)
    # stored again as it was, with the settings added since at their defaults
    assert [key for key in loaded.hparams if key in STORED] == list(STORED)
    assert dict(loaded.hparams) == ModelSettings(**STORED).as_dict()
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
