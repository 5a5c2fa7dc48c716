"""Action sensitivity of a trained model: the default model, trained briefly on the tiny data
through the real command line, rolls out better under its episodes' own actions than under
another episode's (slow: about a minute of training); a model whose action inputs are zero
scores 0."""

import json

import pytest
import torch

from world_models.models.world_model import WorldModel

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")  # no Trainer here


@pytest.mark.slow
def test_the_default_model_listens_to_its_actions(run_cli, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    trained = run_cli("train.py", "data=tiny", f"data.dir={tiny_data}", "data.collect=false",
                      "trainer.max_epochs=30", "logger=csv", f"hydra.run.dir={run_dir}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    # split=all: the tiny test split is one episode, and the actions are swapped between them
    evaluated = run_cli("evaluate.py", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
                        "split=all", f"hydra.run.dir={tmp_path / 'evaluate'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    summary = json.loads((tmp_path / "evaluate" / "summary.json").read_text())
    gain = summary["metrics"]["action_sensitivity"]["psnr_gain"]
    assert gain["mean_over_steps"] > 0.1, gain  # dB; a model that ignores its actions scores 0
    assert "action sensitivity" in evaluated.stdout


def test_action_sensitivity_is_zero_for_a_model_that_ignores_its_actions():
    """A model whose core weights for the action inputs are zero rolls out the same under any
    actions (gain 0 at every step); with them, other actions change its rollout."""
    from world_models.rollout import action_sensitivity

    torch.manual_seed(0)
    model = WorldModel(hidden_size=16, frame_shape=(3, 16, 16), warp="flow")
    g = torch.Generator().manual_seed(1)
    batch = {"frames": torch.rand(3, 8, 3, 16, 16, generator=g),
             "actions": torch.rand(3, 8, 3, generator=g) * 2 - 1}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    frames, actions = batch["frames"], batch["actions"][:, :-1]
    others = actions.roll(1, dims=0)
    listening = action_sensitivity(model, frames, actions, others)
    assert listening.shape == (3, 7) and listening.abs().max() > 0
    inputs = model.core.weight_ih_l0  # [4H, F + A]: the action columns are the last 3
    with torch.no_grad():
        inputs[:, -3:] = 0.0
    assert torch.equal(action_sensitivity(model, frames, actions, others), torch.zeros(3, 7))
