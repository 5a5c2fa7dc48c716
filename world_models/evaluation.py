"""Roll a trained world model out on whole episodes; write per-step metrics, plots and a summary."""

import csv
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from world_models import ensembles, plots, runs
from world_models.allocator import keep_freed_memory
from world_models.checkpointing import check_checkpoint_file
from world_models.data.datamodule import SPLITS, CarRacingDataModule
from world_models.errors import UserError
from world_models.evaluation_data import (
    select_sequences,
    training_data,
    user_overrides,
    warn_if_split_differs,
    with_training_data,
)
from world_models.evaluation_lines import (
    STRATEGIES,
    SUMMARY_STEPS,
    format_sensitivity,
    format_summary,
    format_worse,
)
from world_models.metrics import (
    METRICS,
    per_step_table,
    steps_worse,
)
from world_models.models.world_model import WorldModel
from world_models.rollout import action_sensitivity, predictions_and_scores
from world_models.settings import check_types

BASELINES = ("copy_last", "mean_frame")


def check_config(cfg: DictConfig) -> None:
    """Refuse impossible settings before loading anything, naming the key."""
    check_types(cfg)
    if not cfg.ckpt:
        raise UserError("ckpt: required, e.g. ckpt=outputs/train/<run>/checkpoints/last.ckpt")
    if cfg.split not in (*SPLITS, "all"):
        raise UserError(f"split: expected one of {', '.join(SPLITS)}, all; got '{cfg.split}'")
    r = cfg.rollout
    if r.horizon < 1:
        raise UserError(f"rollout.horizon: expected >= 1, got {r.horizon}")
    if not 1 <= r.context < r.horizon:
        raise UserError(f"rollout.context: expected 1 <= context < horizon ({r.horizon}), "
                        f"got {r.context}")
    if r.batch_size < 1:
        raise UserError(f"rollout.batch_size: expected >= 1, got {r.batch_size}")
    if r.samples < 1:
        raise UserError(f"rollout.samples: expected >= 1, got {r.samples}")
    if not 0 <= r.persistence < 1:
        raise UserError(f"rollout.persistence: expected 0 <= persistence < 1, got {r.persistence}")
    if not r.temperature > 0:
        raise UserError(f"rollout.temperature: expected > 0, got {r.temperature}")
    if cfg.data.collect:
        raise UserError("data.collect: evaluate never collects; point data.dir at a dataset")


def load_model(path) -> WorldModel:
    path = check_checkpoint_file(path, "ckpt")
    try:
        # Rollouts here are short-lived and on the CPU: eager, whatever model.compile trained.
        return WorldModel.load_from_checkpoint(path, map_location="cpu", compile=False)
    except UserError:
        raise
    except Exception as err:  # any unreadable file is the user's to fix
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"ckpt: '{path}' is not a readable WorldModel checkpoint "
                        f"({type(err).__name__}: {reason})") from None


def check_fits(model: WorldModel, datamodule: CarRacingDataModule, path) -> None:
    """The checkpoint's frame and action sizes must be those of the data."""
    frame_shape = tuple(model.hparams.frame_shape)
    if frame_shape != datamodule.frame_shape:
        raise UserError(f"ckpt: '{path}' predicts frames {list(frame_shape)} but data.dir "
                        f"'{datamodule.dir}' holds {list(datamodule.frame_shape)}")
    action_size = datamodule.episodes["train"][0].actions.shape[-1]
    if model.hparams.action_size != action_size:
        raise UserError(f"ckpt: '{path}' takes actions of size {model.hparams.action_size} but "
                        f"data.dir '{datamodule.dir}' holds actions of size {action_size}")


def rollout_metrics(model, sequences, mean_frame, horizon: int, context: int, batch_size: int):
    """strategy -> metric -> [N, horizon], and the first sequence's (truth, tf, ar)."""
    values = {s: {m: [] for m in METRICS} for s in STRATEGIES}
    first = None
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        # Every sequence is cut to its first `horizon` steps, so they stack.
        frames = torch.stack([s["frames"][: horizon + 1] for s in batch])  # [B, T+1, 3, H, W]
        actions = torch.stack([s["actions"][:horizon] for s in batch])  # [B, T, A]
        predictions, scores = predictions_and_scores(model, frames, actions, context, mean_frame)
        for strategy, metrics in scores.items():
            for metric, per_step in metrics.items():
                values[strategy][metric].append(per_step)
        if first is None:
            first = (frames[0, 1:], predictions["teacher_forcing"][0],
                     predictions["autoregressive"][0])
    values = {s: {m: torch.cat(v) for m, v in ms.items()} for s, ms in values.items()}
    return values, first


def sensitivity_to_actions(model, sequences, horizon: int, context: int, batch_size: int,
                           true_psnr: torch.Tensor) -> torch.Tensor | None:
    """[N, horizon] PSNR gain of each rollout under its own actions (scored already:
    true_psnr [N, horizon]) over the next episode's (sequence i gets the actions of i + 1, the
    last those of the first); None for one episode."""
    if len(sequences) < 2:
        return None
    actions = [s["actions"][:horizon] for s in sequences]
    others = actions[1:] + actions[:1]
    gains = []
    for start in range(0, len(sequences), batch_size):
        stop = start + batch_size
        frames = torch.stack([s["frames"][: horizon + 1] for s in sequences[start:stop]])
        gains.append(action_sensitivity(model, frames, torch.stack(actions[start:stop]),
                                        torch.stack(others[start:stop]), context,
                                        true_psnr=true_psnr[start:stop].float()))
    return torch.cat(gains)


def one_step(values, sequences, horizon: int) -> dict:
    """The teacher-forced MSE over steps 1..horizon of every sequence against copying the
    previous true frame over the same steps, and their ratio: goal 3 of the open-loop study
    (at most 0.2x), on whatever data is evaluated."""
    model = values["teacher_forcing"]["mse"].double().mean().item()
    copy = torch.stack([((s["frames"][1 : horizon + 1] - s["frames"][:horizon]) ** 2)
                        .double().mean(dim=(1, 2, 3)) for s in sequences]).mean().item()
    return {"teacher_forced_mse": model, "copy_previous_mse": copy,
            "ratio": model / copy if copy else None}


def summarize(values, horizon: int) -> dict:
    """strategy -> metric -> {step_1, step_10, ..., mean_over_steps}: the numbers to quote."""
    summary = {}
    for strategy, metrics in values.items():
        summary[strategy] = {}
        for metric, per_step in metrics.items():  # [N, T]
            mean = per_step.double().mean(dim=0)  # [T]
            entry = {f"step_{s}": mean[s - 1].item() for s in SUMMARY_STEPS if s <= horizon}
            entry["mean_over_steps"] = mean.mean().item()
            # JSON has no inf: a frame predicted exactly has infinite PSNR.
            summary[strategy][metric] = {k: v if math.isfinite(v) else None
                                         for k, v in entry.items()}
    return summary


def write_csv(path, table: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "strategy", "metric", "mean", "std", "n"])
        writer.writeheader()
        writer.writerows(table)


def write_files(out_dir: Path, values, first, horizon: int, r: DictConfig, samples=None) -> None:
    """The per-step CSV, and the first sequence's grid, GIF and curves (and frames); samples:
    a few sampled rollouts of the first sequence, shown under the truth, or None."""
    truth, tf, ar = first
    table = per_step_table(values)
    write_csv(out_dir / runs.ROLLOUT_METRICS, table)
    plots.rollout_grid(truth, tf, ar, plots.grid_steps(horizon), samples).save(
        out_dir / "rollout_grid.png")
    plots.rollout_gif(out_dir / "rollout.gif", truth, tf, ar, samples=samples)
    plots.loss_curve(out_dir / "rollout_loss.png", table, r.context)
    if r.save_frames:
        plots.save_frames(out_dir / "frames", truth, tf, ar)


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate the checkpoint `cfg.ckpt` on `cfg.split` of `cfg.data.dir`; return the summary."""
    check_config(cfg)
    keep_freed_memory()  # rollouts allocate and free as training steps do (allocator.py)
    out_dir = Path(cfg.paths.output_dir)
    model = load_model(cfg.ckpt)
    cfg, datamodule, sequences, horizon = evaluated_data(cfg, model)
    r = cfg.rollout
    trained = training_data(cfg, datamodule)
    mean_frame = trained.mean_frame()
    values, (truth, tf, ar) = rollout_metrics(model, sequences, mean_frame,
                                              horizon, r.context, r.batch_size)
    sensitivity = sensitivity_to_actions(model, sequences, horizon, r.context, r.batch_size,
                                         values["autoregressive"]["psnr"])
    if sensitivity is not None:  # a strategy of its own in the CSV and the summary
        values["action_sensitivity"] = {"psnr_gain": sensitivity}
    forecasts, samples = ensembles.ensemble_values(model, sequences, trained.episodes["train"],
                                                   horizon, r.context, r.samples, r.seed,
                                                   mean_frame, r.persistence, r.temperature)
    for strategy, metrics in forecasts.items():  # ensembles.py: the forecast metrics
        values.setdefault(strategy, {}).update(metrics)
    write_files(out_dir, values, (truth, tf, ar), horizon, r, samples)

    worse = steps_worse(values, "autoregressive", BASELINES)
    summary = {
        "metrics": summarize(values, horizon),
        "one_step": one_step(values, sequences, horizon),
        # metric -> baseline -> steps (from 1) where the rollout's mean is worse than it
        "autoregressive_worse_than": worse,
        "sequences": len(sequences),
        "horizon": horizon,
        "context": r.context,
        "forecast": ensembles.describe(model, r.samples, r.seed, r.persistence,
                                       r.temperature),
        "split": cfg.split,
        "grid_sequence": sequences[0]["name"],
        "checkpoint": str(cfg.ckpt),
        "data_dir": str(cfg.data.dir),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
    }
    path = runs.write_summary(out_dir, summary)
    print_summary(summary, worse, bool(forecasts), r, path)
    return summary


def format_one_step(one: dict) -> str:
    ratio = "" if one["ratio"] is None else f", {one['ratio']:.3f}x"
    return (f"one step: teacher-forced MSE {one['teacher_forced_mse']:.4g} against "
            f"{one['copy_previous_mse']:.4g} for copying the previous frame{ratio}")


def evaluated_data(cfg: DictConfig, model: WorldModel):
    """The config with the run's data (evaluation_data.with_training_data), its DataModule, the
    episodes to roll out and the horizon they allow; notes and warnings printed."""
    cfg = with_training_data(cfg, user_overrides())
    datamodule = CarRacingDataModule.from_config(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    check_fits(model, datamodule, cfg.ckpt)
    if note := ensembles.note(model, cfg.rollout.samples):
        print(note)
    if cfg.split != "all":
        warn_if_split_differs(cfg.ckpt, cfg)
    r = cfg.rollout
    sequences, horizon = select_sequences(datamodule, cfg.split, r.horizon)
    if r.context >= horizon:
        raise UserError(f"rollout.context: {r.context} leaves nothing to predict in the "
                        f"{horizon} steps available")
    return cfg, datamodule, sequences, horizon


def print_summary(summary: dict, worse: dict, forecasts: bool, r: DictConfig, path) -> None:
    """What evaluate prints: the metrics, where the rollout is worse, where the files are."""
    horizon = summary["horizon"]
    print(f"{summary['sequences']} {summary['split']} sequences, {horizon} steps, "
          f"context {r.context}:")
    print(format_summary(summary["metrics"], horizon))
    print(format_worse(worse, horizon))
    print(format_one_step(summary["one_step"]))
    print(format_sensitivity(summary["metrics"].get("action_sensitivity")))
    if forecasts:
        print(ensembles.format_forecasts(summary["metrics"], r.samples))
    print(f"summary: {path}  per-step metrics: {runs.ROLLOUT_METRICS}  "
          f"pictures: rollout_grid.png, rollout.gif, rollout_loss.png"
          f"{', frames/' if r.save_frames else ''}  (all in {Path(path).parent})")
