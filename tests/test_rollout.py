"""Rollouts, per-step metrics and `evaluate.py` end to end on a tiny real dataset."""

import csv
import json
import math

import lightning
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import nn

from tests.helpers import ROOT, compose_config, run_cli, write_counting_dataset
from world_models import evaluation, plots
from world_models.data.episodes import read_episode
from world_models.errors import UserError
from world_models.evaluation import STRATEGIES
from world_models.evaluation_lines import format_worse
from world_models.metrics import METRICS, copy_last_prediction, per_step_metrics, per_step_table
from world_models.models.world_model import WorldModel
from world_models.rollout import autoregressive, teacher_forcing

HORIZON = 25  # of the 30 steps of a tiny episode


class PlusTenth(nn.Module):
    """A model whose output is known: next frame = input frame + 0.1. Records the states it gets."""

    def __init__(self):
        super().__init__()
        self.states_seen = []

    def forward(self, frames, actions, state=None):
        self.states_seen.append(state)
        steps_so_far = 0 if state is None else state
        return frames + 0.1, steps_so_far + frames.shape[1]


def random_sequences(batch=2, steps=6, size=8):
    torch.manual_seed(0)
    return torch.rand(batch, steps + 1, 3, size, size), torch.rand(batch, steps, 3)


def test_teacher_forcing_and_autoregressive_agree_on_the_given_frames():
    model = WorldModel(hidden_size=8, frame_shape=(3, 8, 8))
    frames, actions = random_sequences()
    tf = teacher_forcing(model, frames, actions)
    assert tf.shape == (2, 6, 3, 8, 8)
    torch.testing.assert_close(autoregressive(model, frames, actions)[:, 0], tf[:, 0])
    ar3 = autoregressive(model, frames, actions, context=3)
    torch.testing.assert_close(ar3[:, :3], tf[:, :3])
    assert not torch.allclose(ar3[:, 3:], tf[:, 3:])  # from then on it sees its own frames
    assert model.training  # the caller's mode comes back


@pytest.mark.parametrize("context", [1, 3])
def test_autoregressive_feeds_back_its_clamped_predictions(context):
    frames, actions = random_sequences(steps=10)
    frames = 0.5 + 0.5 * frames  # in [0.5, 1]: fed-back frames pass 1 within a few steps
    model = PlusTenth()
    ar = autoregressive(model, frames, actions, context=context)
    assert model.states_seen == [None, *range(context, 10)]  # zero state, then carried
    torch.testing.assert_close(ar[:, : context], frames[:, :context] + 0.1)
    given = frames[:, context - 1]
    for k in range(context, 10):
        # frame k+1 is predicted from the clamped prediction of frame k
        expected = (given + 0.1 * (k - context + 1)).clamp(0, 1) + 0.1
        torch.testing.assert_close(ar[:, k], expected)
    torch.testing.assert_close(teacher_forcing(PlusTenth(), frames, actions), frames[:, :-1] + 0.1)


def test_per_step_metrics_against_hand_computed_values():
    target = torch.zeros(1, 2, 3, 32, 32)
    pred = torch.stack([torch.full((3, 32, 32), 0.1), torch.full((3, 32, 32), 0.2)])[None]
    m = per_step_metrics(pred, target)
    assert set(m) == set(METRICS) and all(v.shape == (1, 2) for v in m.values())
    torch.testing.assert_close(m["mse"], torch.tensor([[0.01, 0.04]]))
    torch.testing.assert_close(m["psnr"], 10 * torch.log10(1 / torch.tensor([[0.01, 0.04]])))
    exact = per_step_metrics(target, target)["psnr"]  # capped at 8-bit quantisation, not inf
    torch.testing.assert_close(exact, torch.full((1, 2), 10 * math.log10(12 * 255**2)))
    torch.manual_seed(0)
    frames = torch.rand(2, 3, 3, 32, 32)
    same = per_step_metrics(frames, frames)["ssim"]
    torch.testing.assert_close(same, torch.ones(2, 3))
    other = per_step_metrics(frames, frames.roll(1, dims=0))["ssim"]
    assert (other < 0.5).all()


def test_copy_last_and_per_step_table():
    frames = torch.arange(5.0).view(1, 5, 1, 1, 1).expand(2, 5, 3, 4, 4)  # frame t filled with t
    assert copy_last_prediction(frames)[0, :, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert copy_last_prediction(frames, context=2)[0, :, 0, 0, 0].tolist() == [0, 1, 1, 1]
    rows = per_step_table({"copy_last": {"mse": torch.tensor([[1.0, 2.0], [3.0, 6.0]])}})
    assert rows == [
        {"step": 1, "strategy": "copy_last", "metric": "mse", "mean": 2.0, "std": 1.0, "n": 2},
        {"step": 2, "strategy": "copy_last", "metric": "mse", "mean": 4.0, "std": 2.0, "n": 2},
    ]


@pytest.fixture(scope="module")
def trained(tiny_run, tiny_data, tmp_path_factory):
    """A directory for evaluations, the tiny real dataset (5 episodes of 30 steps) and the
    checkpoint trained on it for an epoch (conftest.py)."""
    return (tmp_path_factory.mktemp("evaluate"), tiny_data,
            tiny_run / "checkpoints" / "last.ckpt")


def test_evaluate_takes_the_training_runs_data_by_default(trained):
    root, data, ckpt = trained
    result = run_cli("evaluate.py", f"ckpt={ckpt}", f"rollout.horizon={HORIZON}",
                     f"hydra.run.dir={root / 'eval_default_data'}")
    assert result.returncode == 0, result.stderr
    assert f"data: {data} (from the training run" in result.stdout
    summary = json.loads((root / "eval_default_data" / "summary.json").read_text())
    assert summary["data_dir"] == str(data) and summary["data"]["split"] == [0.6, 0.2, 0.2]


def test_a_data_key_on_the_command_line_changes_that_key_of_the_runs_data(trained, capsys):
    """data.batch_size=2 does not choose another dataset: the run's data.dir and split stay
    (it once fell back to the default dataset); a data group does choose another."""
    root, data, ckpt = trained
    cfg = compose_config("evaluate", f"ckpt={ckpt}", "data.batch_size=2")
    assert cfg.data.dir != str(data)  # the default dataset, before the run's data is taken
    taken = evaluation.with_training_data(cfg, [f"ckpt={ckpt}", "data.batch_size=2"])
    assert (taken.data.dir, list(taken.data.split)) == (str(data), [0.6, 0.2, 0.2])
    assert taken.data.batch_size == 2 and taken.data.collect is False
    chosen = compose_config("evaluate", f"ckpt={ckpt}", "data=tiny", "data.dir=elsewhere")
    assert evaluation.with_training_data(chosen, ["data=tiny", "data.dir=elsewhere"]) is chosen


def test_evaluate_writes_every_artifact(trained, capsys):
    """evaluation.evaluate on the real evaluate.yaml, in this process."""
    root, data, ckpt = trained
    out = root / "eval"
    out.mkdir()
    evaluation.evaluate(compose_config(
        "evaluate", f"ckpt={ckpt}", "data=tiny", f"data.dir={data}", f"rollout.horizon={HORIZON}",
        "rollout.save_frames=true", f"paths.output_dir={out}"))
    printed = capsys.readouterr().out
    steps = plots.grid_steps(HORIZON)  # 1..10 and 25
    cell = 32 * plots.SCALE + plots.PAD
    with Image.open(out / "rollout_grid.png") as grid:
        assert grid.size == (plots.LABEL_WIDTH + len(steps) * cell, plots.HEADER + 4 * cell)
    with Image.open(out / "rollout.gif") as gif:
        assert gif.n_frames == HORIZON
    assert Image.open(out / "rollout_loss.png").size == (700, 450)
    for kind in ("ground-truth", "teacher-forcing", "autoregressive"):
        assert len(list((out / "frames" / kind).glob("*.png"))) == HORIZON
    with open(out / "rollout_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == HORIZON * len(STRATEGIES) * len(METRICS)
    assert {r["strategy"] for r in rows} == {"teacher_forcing", "autoregressive", "copy_last",
                                             "mean_frame"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sequences"] == 1 and summary["horizon"] == HORIZON  # tiny's test split
    assert summary["checkpoint"] == str(ckpt) and summary["data_dir"] == str(data)
    tf = summary["metrics"]["teacher_forcing"]["mse"]
    assert set(tf) == {"step_1", "step_10", "mean_over_steps"}
    # With one given frame, the first autoregressive step is a teacher-forced one.
    assert summary["metrics"]["autoregressive"]["mse"]["step_1"] == pytest.approx(tf["step_1"])
    assert "teacher_forcing" in printed and str(out / "summary.json") in printed
    # Where the rollout is worse than a baseline, per metric, from the per-step means in the CSV.
    worse = summary["autoregressive_worse_than"]
    assert set(worse) == {"mse", "psnr", "ssim", "road_iou"}
    means = {(r["strategy"], r["metric"], int(r["step"])): float(r["mean"]) for r in rows}
    assert worse["mse"]["mean_frame"] == [
        t for t in range(1, HORIZON + 1)
        if means["autoregressive", "mse", t] > means["mean_frame", "mse", t]]
    assert "autoregressive: " in printed
    # One test episode: no other episode's actions to swap in.
    assert "action sensitivity: not measured" in printed
    # Goal 3 on the evaluated data: teacher forcing against copying the previous true frame.
    episode = next(p for p in data.glob("*.npz") if p.stem in summary["grid_sequence"])
    frames = torch.from_numpy(read_episode(episode).frames)
    frames = frames[: HORIZON + 1].permute(0, 3, 1, 2).double() / 255  # [T+1, 3, H, W]
    copy = ((frames[1:] - frames[:-1]) ** 2).mean().item()
    one = summary["one_step"]
    assert one["copy_previous_mse"] == pytest.approx(copy, rel=1e-5)
    assert one["teacher_forced_mse"] == pytest.approx(tf["mean_over_steps"], rel=1e-5)
    assert one["ratio"] == pytest.approx(one["teacher_forced_mse"] / copy)
    assert f"one step: teacher-forced MSE {one['teacher_forced_mse']:.4g}" in printed


def test_the_worse_line_names_the_metrics_that_never_lose_and_where_the_others_do():
    worse = {"mse": {"copy_last": [], "mean_frame": []},
             "psnr": {"copy_last": [], "mean_frame": []},
             "ssim": {"mean_frame": [4]}, "road_iou": {"copy_last": [3, 4, 5, 9]}}
    assert format_worse(worse, 150) == (
        "autoregressive: never worse than copy-last or the mean frame over 150 steps in mse, "
        "psnr; worse in ssim than mean_frame at 1 steps (4); road_iou than copy_last at 4 steps "
        "(3-5, 9)")
    assert format_worse({"mse": {"copy_last": [1, 2]}}, 20) == (
        "autoregressive: worse in mse than copy_last at 2 steps (1-2)")


BAD_INPUTS = {  # case -> the key the one-line message must start with
    "missing ckpt": "ckpt",
    "random bytes": "ckpt",
    "frame size": "ckpt",
    "action size": "ckpt",
    "empty data dir": "data.dir",
    "missing data dir": "data.dir",
    "horizon 0": "rollout.horizon",
    "context 0": "rollout.context",
    "context = horizon": "rollout.context",
    "unknown split": "split",
}
CLI_IN_FAST_SUITE = {"horizon 0"}  # ~6 s of imports each; in-process above: all of them


def bad_input(case, trained, tmp_path) -> list[str]:
    """The evaluate.py overrides of a bad-input case (its files made in tmp_path)."""
    root, data, ckpt = trained
    if case == "missing ckpt":
        ckpt = tmp_path / "nope.ckpt"
    elif case == "random bytes":
        ckpt = tmp_path / "random.ckpt"
        ckpt.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif case == "frame size":
        data = write_counting_dataset(tmp_path / "4x4", [50] * 5, size=4)
    elif case == "action size":
        ckpt = tmp_path / "actions2.ckpt"
        model = WorldModel(hidden_size=8, action_size=2)
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                    "pytorch-lightning_version": lightning.__version__}, ckpt)
    elif case == "empty data dir":
        data = tmp_path / "empty"
        data.mkdir()
    elif case == "missing data dir":
        data = tmp_path / "nope"
    extra = {"horizon 0": ["rollout.horizon=0"], "context 0": ["rollout.context=0"],
             "context = horizon": [f"rollout.context={HORIZON}"],
             "unknown split": ["split=validation"]}.get(case, [])
    return [f"ckpt={ckpt}", "data=tiny", f"data.dir={data}", f"rollout.horizon={HORIZON}", *extra]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_evaluate_refuses_bad_input(trained, tmp_path, case):
    """The real evaluate.yaml composed in-process: every case raises a UserError naming its key."""
    # Outside a Hydra run there is no run directory to resolve paths.output_dir from.
    overrides = [*bad_input(case, trained, tmp_path), f"paths.output_dir={tmp_path}"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    with pytest.raises(UserError, match=f"^{BAD_INPUTS[case]}") as err:
        evaluation.evaluate(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=() if case in CLI_IN_FAST_SUITE else pytest.mark.slow)
    for case in BAD_INPUTS
])
def test_evaluate_cli_refuses_bad_input_in_one_line(trained, tmp_path, case):
    result = run_cli("evaluate.py", *bad_input(case, trained, tmp_path),
                     f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {BAD_INPUTS[case]}"), result.stderr
    assert "Traceback" not in result.stderr


def test_warns_when_evaluating_on_another_split(trained, capsys):
    root, data, ckpt = trained
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        same = compose("evaluate", overrides=[f"ckpt={ckpt}", "data=tiny"])
        other = compose("evaluate", overrides=[f"ckpt={ckpt}"])  # data=default: 0.8/0.1/0.1
    evaluation.warn_if_split_differs(ckpt, same)
    assert capsys.readouterr().out == ""
    evaluation.warn_if_split_differs(ckpt, other)
    assert capsys.readouterr().out.startswith("warning: data.split=[0.8, 0.1, 0.1]")


def test_baselines_on_other_data_come_from_the_runs_training_data(trained, tmp_path, capsys):
    """On a held-out dataset the mean frame is the run's mean *training* frame, not the mean of
    the data being evaluated (which would know the test distribution)."""
    import shutil

    import numpy as np

    from world_models.data.datamodule import CarRacingDataModule
    root, data, ckpt = trained
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    for path in sorted(data.glob("*.npz"))[:3]:
        shutil.copy(path, heldout / path.name)
    out = tmp_path / "eval"
    out.mkdir()
    evaluation.evaluate(compose_config(
        "evaluate", f"ckpt={ckpt}", "data=tiny", f"data.dir={heldout}", "split=all",
        f"rollout.horizon={HORIZON}", f"paths.output_dir={out}"))
    assert "baselines: mean frame and climatology from the run's training data" in \
        capsys.readouterr().out
    trained_on = CarRacingDataModule(dir=data, split=[0.6, 0.2, 0.2], collect=False)
    trained_on.setup()
    mean = trained_on.mean_frame().numpy()
    episodes = sorted(heldout.glob("*.npz"))
    first = [np.load(p)["frames"][1].transpose(2, 0, 1) / 255.0 for p in episodes]
    expected = np.mean([((mean - f) ** 2).mean() for f in first])
    with open(out / "rollout_metrics.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["strategy"] == "mean_frame"
                   and r["metric"] == "mse" and r["step"] == "1")
    assert float(row["mean"]) == pytest.approx(expected, rel=1e-5)
    own = np.mean([np.load(p)["frames"].mean(axis=0).transpose(2, 0, 1) / 255.0
                   for p in episodes], axis=0)
    assert abs(((own - first[0]) ** 2).mean() - ((mean - first[0]) ** 2).mean()) > 1e-6
