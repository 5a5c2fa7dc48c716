"""A model with a latent (model.latent=gaussian) through the real command lines on tiny data:
it trains and logs its KL and warm-up, samples K different rollouts from a seed and the same
ones again, is evaluated as forecasts, resumes as if never interrupted, and runs under DDP."""

import csv
import json
import sys

import pytest
import torch
from PIL import Image

from tests.helpers import compose_config, train_here
from tests.test_resume import kill_mid_epoch, results
from world_models import evaluation
from world_models.data.datamodule import CarRacingDataModule
from world_models.errors import UserError
from world_models.evaluation import evaluate as evaluate_in_process
from world_models.evaluation import load_model
from world_models.forecast import FORECAST_METRICS, sequence_generator
from world_models.models.latent import PersistentNoise, check_latent
from world_models.rollout import sampled_rollouts
from world_models.training import check_config

LATENT = ("experiment=stochastic", "data=tiny", "data.collect=false", "model.hidden_size=16")
# The latent run: 3 epochs with input noise (random draws for a resume to repeat), logging
# every step.
RUN = ("trainer.max_epochs=3", "train.input_noise=0.02", "trainer.log_every_n_steps=1")


def train_args(tiny_data, run_dir, *extra):
    return ["train.py", *LATENT, f"data.dir={tiny_data}", f"paths.log_dir={run_dir.parent}",
            f"hydra.run.dir={run_dir}", *extra]


def ok(proc):
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])


@pytest.fixture(scope="module")
def latent_run(run_cli, tiny_data, tmp_path_factory):
    """A latent model trained as RUN says, through the command line."""
    run_dir = tmp_path_factory.mktemp("latent") / "run"
    ok(run_cli(*train_args(tiny_data, run_dir, *RUN)))
    return run_dir


def evaluate(run_cli, ckpt, out, *extra):
    proc = run_cli("evaluate.py", f"ckpt={ckpt}", "rollout.horizon=12", f"hydra.run.dir={out}",
                   *extra)
    ok(proc)
    return proc, json.loads((out / "summary.json").read_text())


def evaluate_here(ckpt, tiny_data, out, *extra):
    """evaluate() of the real evaluate.yaml in this process, on the data the run trained on
    (as the command line takes it), with evaluate()'s rollout.horizon."""
    out.mkdir(parents=True, exist_ok=True)  # a command line's run directory
    evaluate_in_process(compose_config("evaluate", f"ckpt={ckpt}", "data=tiny",
                                       f"data.dir={tiny_data}", "rollout.horizon=12",
                                       f"paths.output_dir={out}", *extra))
    return json.loads((out / "summary.json").read_text())


def test_kl_and_its_warm_up_are_logged(latent_run):
    with open(latent_run / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/kl_step")]
    steps = [int(row["step"]) for row in rows]
    total = json.loads((latent_run / "results.json").read_text())["optimizer_steps"]
    assert steps == list(range(total)) and total >= 4
    kl = [float(row["train/kl_step"]) for row in rows]
    assert all(value > 0 for value in kl)  # the posterior is not the prior
    # the defaults (conf/model/builtin.yaml): kl_weight 1e-5, reached linearly over half the run
    weights = [float(row["train/kl_weight"]) for row in rows]
    expected = [1e-5 * min(step / total / 0.5, 1.0) for step in steps]
    assert weights == pytest.approx(expected, rel=1e-5, abs=1e-12)
    assert weights[0] == 0 and weights[-1] == pytest.approx(1e-5)


def model_and_test_sequence(run_dir, data_dir):
    """The run's model and the first 12 steps of the first test sequence of the tiny data."""
    model = load_model(run_dir / "checkpoints" / "last.ckpt")
    datamodule = CarRacingDataModule(str(data_dir), seq_len=5, split=[0.6, 0.2, 0.2],
                                     collect=False)
    datamodule.setup()
    sequence = datamodule.sequences("test")[0]
    return model, sequence["frames"][:13], sequence["actions"][:12]


def test_k_samples_differ_and_the_same_seed_draws_them_again(latent_run, tiny_data):
    model, frames, actions = model_and_test_sequence(latent_run, tiny_data)

    def draw(seed):
        return sampled_rollouts(model, frames, actions, 1, 4, sequence_generator(seed, 0, 0))

    first, again, other = draw(0), draw(0), draw(1)
    assert first.shape == (4, 12, *frames.shape[1:])
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    for k in range(1, 4):  # every sample its own future
        assert (first[k] - first[0]).abs().max() > 1e-6
    persistent = sampled_rollouts(model, frames, actions, 1, 4, sequence_generator(0, 0, 0),
                                  persistence=0.9)
    assert not torch.equal(persistent, first) and torch.equal(persistent[:, 0], first[:, 0])


def test_persistent_noise_keeps_each_draw_standard_normal_but_correlates_the_steps():
    def draws(rho, seed=0):  # a rollout's context call, then one step at a time
        noise = PersistentNoise(torch.Generator().manual_seed(seed), rho)
        first = noise.standard_normal(torch.Size([20000, 2, 3]), torch.float64)
        rest = [noise.standard_normal(torch.Size([20000, 1, 3]), torch.float64)
                for _ in range(30)]
        return torch.cat([first, *rest], dim=1)  # [B, 32, Z]

    plain = torch.randn(20000, 2, 3, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    assert torch.equal(draws(0.0)[:, :2], plain)  # rho 0: the generator's own draws
    eps = draws(0.9)
    assert torch.equal(eps, draws(0.9)) and not torch.equal(eps, draws(0.9, seed=1))
    assert eps.std(dim=(0, 2)).sub(1).abs().max() < 0.03  # every step N(0, 1)
    lag1 = (eps[:, 1:] * eps[:, :-1]).mean()
    lag10 = (eps[:, 10:] * eps[:, :-10]).mean()
    assert lag1 == pytest.approx(0.9, abs=0.02) and lag10 == pytest.approx(0.9**10, abs=0.02)


def test_temperature_scales_every_draw_and_nothing_else():
    def draws(rho, temperature):
        noise = PersistentNoise(torch.Generator().manual_seed(0), rho, temperature)
        return torch.cat([noise.standard_normal(torch.Size([500, 3, 4]), torch.float64)
                          for _ in range(3)], dim=1)

    for rho in (0.0, 0.9):
        assert torch.equal(draws(rho, 2.5), 2.5 * draws(rho, 1.0))
    assert draws(0.0, 1.0).std().item() == pytest.approx(1.0, abs=0.03)


def test_hotter_samples_spread_further_from_the_same_draws(latent_run, tiny_data):
    model, frames, actions = model_and_test_sequence(latent_run, tiny_data)

    def draw(**how):
        return sampled_rollouts(model, frames, actions, 1, 6, sequence_generator(0, 0, 0), **how)

    def spread(samples):  # the samples' mean distance to their mean, over the steps
        return (samples - samples.mean(0)).flatten(2).norm(dim=-1).mean().item()

    assert torch.equal(draw(temperature=1.0), draw())  # 1: the prior, the same draws
    assert spread(draw(temperature=3.0)) > 1.5 * spread(draw())
    assert spread(draw(temperature=3.0, persistence=0.9)) > 1.5 * spread(draw(persistence=0.9))


def test_evaluate_scores_k_samples_as_forecasts_the_same_twice(latent_run, run_cli, tiny_data,
                                                               tmp_path, capsys):
    """The command line once, then the same evaluation again in this process: the same draws."""
    ckpt = latent_run / "checkpoints" / "last.ckpt"
    _, summary = evaluate(run_cli, ckpt, tmp_path / "k3", "rollout.samples=3")
    again = evaluate_here(ckpt, tiny_data, tmp_path / "k3_again", "rollout.samples=3")
    first_csv = (tmp_path / "k3" / "rollout_metrics.csv").read_text()
    assert first_csv == (tmp_path / "k3_again" / "rollout_metrics.csv").read_text()
    assert summary["metrics"] == again["metrics"]
    assert summary["forecast"]["samples"] == 3
    for ensemble in ("sampled", "deterministic", "climatology"):
        assert set(summary["metrics"][ensemble]) == set(FORECAST_METRICS)
    rows = list(csv.DictReader(first_csv.splitlines()))
    sampled = {(r["metric"], int(r["step"])): float(r["mean"]) for r in rows
               if r["strategy"] == "sampled"}
    for step in range(1, 13):  # the best of K is never worse than one sample on average
        assert sampled["best_mse", step] <= sampled["sample_mse", step] + 1e-12
    # z at the prior's mean: the deterministic ensemble is the autoregressive rollout
    deterministic = summary["metrics"]["deterministic"]["best_mse"]
    assert deterministic == pytest.approx(summary["metrics"]["autoregressive"]["mse"])
    # a one-frame baseline's energy is its distance to the truth (one test episode here)
    pixels = 3 * summary["data"]["resolution"] ** 2
    for baseline in ("copy_last", "mean_frame"):
        scores = summary["metrics"][baseline]
        assert summary["sequences"] == 1 and scores["energy"]["step_10"] == pytest.approx(
            (pixels * scores["mse"]["step_10"]) ** 0.5, rel=1e-5)

    capsys.readouterr()
    one = evaluate_here(ckpt, tiny_data, tmp_path / "k1")
    assert one["forecast"] is None and "sampled" not in one["metrics"]
    assert "forecast" not in capsys.readouterr().out
    # Three sample rows between the true frames and teacher forcing, in the grid and the GIF
    for name in ("rollout_grid.png", "rollout.gif"):
        with_samples = Image.open(tmp_path / "k3" / name).size
        without = Image.open(tmp_path / "k1" / name).size
        assert with_samples != without, name


def test_a_deterministic_model_ignores_samples_with_a_note(tiny_run, tiny_data, tmp_path,
                                                          capsys):
    summary = evaluate_here(tiny_run / "checkpoints" / "last.ckpt", tiny_data, tmp_path / "ev",
                            "rollout.samples=4")
    assert "rollout.samples=4: the model is deterministic" in capsys.readouterr().out
    assert "sampled" not in summary["metrics"]
    # one rollout as K copies: no spread, so the energy score is its distance to the truth
    metrics = summary["metrics"]
    assert metrics["deterministic"]["best_mse"] == metrics["autoregressive"]["mse"]
    assert metrics["deterministic"]["mean_mse"] == metrics["autoregressive"]["mse"]
    assert set(metrics["climatology"]) == set(FORECAST_METRICS)


def test_a_killed_latent_run_resumes_as_if_never_interrupted(cli_env, tiny_data,
                                                             latent_run, tmp_path):
    """latent_run is the uninterrupted run; the resumed one runs in this process."""
    killed = tmp_path / "train" / "killed"
    kill_mid_epoch([sys.executable, *train_args(tiny_data, killed, *RUN)], cli_env, killed,
                   epoch=1)
    resumed = train_here(tmp_path / "train" / "resumed", *LATENT, f"data.dir={tiny_data}",
                         f"paths.log_dir={tmp_path / 'train'}", *RUN, "ckpt_path=last")
    whole = results(latent_run)
    assert resumed["test_mse"] == whole["test_mse"]
    assert resumed["optimizer_steps"] == whole["optimizer_steps"]


@pytest.mark.slow  # the DDP path is the plain model's (test_train.py); this adds the latent
def test_ddp_trains_a_latent_model(run_cli, tiny_data, tmp_path):
    run_dir = tmp_path / "ddp"
    proc = run_cli(*train_args(tiny_data, run_dir, "trainer=ddp", "trainer.max_epochs=1"))
    ok(proc)
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr
    assert torch.isfinite(torch.tensor(results(run_dir)["test_mse"]))


def test_a_bad_latent_setting_is_refused_naming_the_key(tiny_data, tmp_path):
    """train.py's checks on the real train.yaml, in this process (test_train.py: the command
    line turns such an error into one line and exit code 2)."""
    with pytest.raises(UserError) as refused:
        check_config(compose_config("train", *LATENT, f"data.dir={tiny_data}",
                                    f"paths.output_dir={tmp_path}", "model.latent=nope"))
    assert str(refused.value).startswith("model.latent:") and "gaussian" in str(refused.value)


@pytest.mark.parametrize("settings, words", [
    (("gaussian", 16, 1e-5, 0.5, "per_step"), ["model.latent", "train.protocol=bptt"]),
    (("gaussian", 0, 1e-5, 0.5, "bptt"), ["model.latent_size", ">= 1"]),
    (("gaussian", 16, -1.0, 0.5, "bptt"), ["model.kl_weight", ">= 0"]),
    (("gaussian", 16, 1e-5, 2.0, "bptt"), ["model.kl_warmup", "[0, 1]"]),
])
def test_latent_settings_that_cannot_work_name_their_key(settings, words):
    with pytest.raises(UserError) as refused:
        check_latent(*settings)
    assert all(word in str(refused.value) for word in words), str(refused.value)


def test_rollout_samples_below_one_is_refused(latent_run, tiny_data, tmp_path):
    with pytest.raises(UserError, match="^rollout.samples"):
        evaluate_here(latent_run / "checkpoints" / "last.ckpt", tiny_data, tmp_path,
                      "rollout.samples=0")


@pytest.mark.parametrize("key, value, message", [
    ("persistence", "1.0", "expected 0 <= persistence < 1"),
    ("persistence", "abc", "expected a number"),
    ("temperature", "0", "expected > 0"),
    ("temperature", "-1", "expected > 0"),
    ("temperature", "hot", "expected a number"),
])
def test_rollout_sampling_words_out_of_range_are_refused(key, value, message):
    cfg = compose_config("evaluate", "ckpt=x.ckpt", f"rollout.{key}={value}")
    with pytest.raises(UserError, match=f"rollout.{key}: {message}"):
        evaluation.check_config(cfg)
