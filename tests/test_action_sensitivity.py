"""Action sensitivity of a trained model: the default model, trained briefly on the tiny data
through the real command line, rolls out better under its episodes' own actions than under
another episode's (slow: about a minute of training)."""

import json

import pytest


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
