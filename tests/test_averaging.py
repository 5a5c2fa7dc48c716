"""callbacks.ema: the run's weights averaged over its last part (world_models/averaging.py)."""

import pytest
import torch

from tests.helpers import train_here
from world_models.errors import UserError

WORDS = ["data=tiny", "data.collect=false", "model.hidden_size=16", "data.train_seq_len=10",
         "data.train_stride=5", "train.open_loop.horizon=8", "trainer.max_epochs=2",
         "callbacks.rollout.every_n_epochs=0"]


def weights(run_dir) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return checkpoint["state_dict"]


def run(tmp_path, tiny_data, name, *words) -> tuple[dict, dict]:
    results = train_here(tmp_path / name, f"data.dir={tiny_data}", *WORDS, *words)
    return results, weights(tmp_path / name)


def test_the_average_starts_where_it_is_told_and_follows_the_weights_before(tiny_data,
                                                                           tmp_path):
    plain, plain_weights = run(tmp_path, tiny_data, "plain", "callbacks.ema=null")
    # starting at the run's end, the average is the trained weights at every step
    late, late_weights = run(tmp_path, tiny_data, "late", "callbacks.ema.start=1.0")
    assert late["test_mse"] == plain["test_mse"]
    for name, value in plain_weights.items():
        torch.testing.assert_close(late_weights[name], value, rtol=0, atol=0)
    # averaging from the start over a short memory ends elsewhere, and tests what it saved
    early, early_weights = run(tmp_path, tiny_data, "early", "callbacks.ema.start=0",
                               "callbacks.ema.decay=0.5")
    assert early["test_mse"] != plain["test_mse"]
    moved = [name for name, value in plain_weights.items()
             if not torch.equal(early_weights[name], value)]
    assert "decoder.net.weight" in moved or len(moved) > len(plain_weights) // 2, moved


@pytest.mark.parametrize("word,message", [
    ("callbacks.ema.decay=1.0", "callbacks.ema.decay: expected 0 <= decay < 1, got 1.0"),
    ("callbacks.ema.start=1.5", "callbacks.ema.start: expected a fraction of the run in"),
])
def test_bad_averaging_settings_are_refused_in_one_line(tiny_data, tmp_path, word, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        train_here(tmp_path / "bad", f"data.dir={tiny_data}", *WORDS, word)
