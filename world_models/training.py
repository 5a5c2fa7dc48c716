"""Build every object from the composed config, fit, test, and write the run's results."""

import logging
import os
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from world_models import runs
from world_models.allocator import keep_freed_memory
from world_models.checkpointing import check_checkpoint_file
from world_models.data.datamodule import CarRacingDataModule, check_split, float_batch
from world_models.errors import UserError
from world_models.metrics import window_baselines
from world_models.models.hparams import MODEL_KEYS, ModelSettings
from world_models.models.world_model import WorldModel
from world_models.settings import check_known, check_types

# Two lines in every run that say nothing about it: Lightning's advert for its cloud logger, and
# torch's notice that a pytree class Lightning still uses is deprecated.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip"))
warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                        FutureWarning)


class Throughput(Callback):
    """Predicted frames per second of training-step time (no validation, no data loading)."""

    def __init__(self):
        self.frames, self.seconds, self._start = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._start
        frames = batch["frames"]  # [B, L, 3, H, W]
        self.frames += frames.shape[0] * (frames.shape[1] - 1)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def wandb_has_key() -> bool:
    netrc = Path.home() / ".netrc"
    return bool(os.environ.get("WANDB_API_KEY")) or (
        netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    )


def build_loggers(cfg: DictConfig) -> list:
    loggers = []
    for conf in (cfg.get("logger") or {}).values():
        conf = OmegaConf.to_container(conf, resolve=True)
        if conf["_target_"].endswith("WandbLogger") and conf.get("offline") is None:
            # No network and no key: log offline; `wandb sync` uploads the run later.
            conf["offline"] = not wandb_has_key()
        loggers.append(hydra.utils.instantiate(conf))
    return loggers


def build_callbacks(cfg: DictConfig) -> list:
    callbacks = []
    for name, conf in (cfg.get("callbacks") or {}).items():
        if conf is None:  # a preset (conf/debug/) turns a callback off by setting it to null
            continue
        if name == "model_checkpoint" and conf.get("monitor") is None:
            continue  # checkpoint_monitor=null: the last epoch is tested (last_checkpoint)
        try:
            callbacks.append(hydra.utils.instantiate(conf))
        except InstantiationException as err:
            # Hydra wraps a callback's refusal of a setting; the user needs the one line.
            if isinstance(err.__cause__, UserError):
                raise err.__cause__ from None
            raise
    return callbacks


def check_checkpoint(path, model: WorldModel) -> None:
    """Refuse a checkpoint that is missing, unreadable or shaped for another config."""
    path = check_checkpoint_file(path, "ckpt_path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as err:  # any unreadable file is the user's to fix
        raise UserError(f"ckpt_path: '{path}' is not a readable checkpoint ({err})") from None
    own = model.state_dict()
    for key, tensor in own.items():
        if key not in state or state[key].shape != tensor.shape:
            got = list(state[key].shape) if key in state else "nothing"
            raise UserError(
                f"ckpt_path: '{path}' does not fit the config: {key} is {got} in the "
                f"checkpoint, {list(tensor.shape)} in the model (other model.* or data.resolution?)"
            )


def check_config(cfg: DictConfig) -> None:
    """Refuse impossible settings before data is collected or anything is built."""
    check_known(cfg.model, "model", MODEL_KEYS)  # ModelSettings: the model's settings
    check_types(cfg)
    if int(cfg.trainer.max_epochs) < 1:
        raise UserError(f"trainer.max_epochs: expected >= 1, got {cfg.trainer.max_epochs}")
    check_split(cfg.data.split, needs=("train", "test"))  # the results hold the test MSE
    size = int(cfg.data.resolution)
    ModelSettings.from_config(cfg, frame_shape=(3, size, size)).check()


def train(cfg: DictConfig) -> dict:
    """Fit and test one model as `cfg` says; return (and write) its results."""
    check_config(cfg)
    keep_freed_memory()  # ~10% faster steps on glibc (world_models/allocator.py)
    with runs.claimed(cfg.paths.output_dir):  # one training per run directory
        return _train(cfg)


def _train(cfg: DictConfig) -> dict:
    ckpt_path = runs.resolve_ckpt_path(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = CarRacingDataModule.from_config(cfg)
    # Collect and split here, in the launching process, before DDP starts workers.
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = WorldModel(ModelSettings.from_config(cfg, datamodule.frame_shape))
    if ckpt_path:
        check_checkpoint(ckpt_path, model)
    elif model.fade is not None:  # what to expect where nothing is known: at first, the average
        with torch.no_grad():
            model.fade.frame.copy_(datamodule.mean_frame())
    fitted = fit_and_test(cfg, model, datamodule, ckpt_path)
    if not fitted["trainer"].is_global_zero:
        return {}
    out_dir = Path(cfg.paths.output_dir)
    results = results_of(cfg, model, datamodule, fitted, out_dir)
    path = runs.write_results(out_dir, results)
    print(format_results(results))
    # the checkpoint it tested, for make evaluate CKPT=...; none under debug=fast
    tested = results["checkpoint"]
    print(f"results: {path}  " + (f"checkpoint: {tested}" if tested else "(no checkpoints)")
          + f"  logs: {out_dir}")
    return results


def fit_and_test(cfg: DictConfig, model: WorldModel, datamodule, ckpt_path) -> dict:
    """trainer.fit, then trainer.test of the checkpoint checkpoint_monitor chose (or the last
    epoch); what the results are made of."""
    throughput = Throughput()
    callbacks = [*build_callbacks(cfg), throughput]
    loggers = build_loggers(cfg)
    for logger in loggers:  # the whole run config (seed, data, trainer), not just the model's
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    # a dataset of fewer batches an epoch than the logging interval (data=tiny) logs every step
    batches = -(-len(datamodule.datasets["train"]) // datamodule.batch_size)
    every = max(1, min(int(cfg.trainer.get("log_every_n_steps", 50)), batches))
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      log_every_n_steps=every)
    try:
        started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        fit_seconds = time.perf_counter() - started
        # the teacher-forced validation MSE of the last epoch validated (test() resets these)
        last_val = trainer.callback_metrics.get("val/loss")
        # The last rollout's open-loop MSE, if the rollout callback ran (a tuning objective).
        rollout_mse = trainer.callback_metrics.get("val/rollout_mse_ar")
        checkpoint = next((c for c in callbacks
                           if isinstance(c, ModelCheckpoint) and c.monitor), None)
        best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
        tested = trainer.test(model, datamodule=datamodule, ckpt_path=best or None,
                              verbose=False)
    finally:
        if any(isinstance(lg, WandbLogger) for lg in loggers):
            import wandb

            wandb.finish()  # so every job of a multirun is its own W&B run
    # None when no epoch was validated (a resumed run carries its predecessor's best).
    best_score = checkpoint.best_model_score if best else None
    return {"trainer": trainer, "test_mse": float(tested[0]["test/loss"]), "best": best,
            "best_score": best_score, "last_val": last_val, "rollout_mse": rollout_mse,
            "fit_seconds": fit_seconds, "frames_per_s": throughput.frames_per_s}


def results_of(cfg: DictConfig, model: WorldModel, datamodule, fitted: dict,
               out_dir: Path) -> dict:
    """The run's results: the tested MSE against the baselines on the same windows, and what
    was trained, how long and how fast."""
    baselines = window_baselines(map(float_batch, datamodule.test_dataloader()),
                                 datamodule.mean_frame())
    test_mse, trainer = fitted["test_mse"], fitted["trainer"]

    def number(value):
        return None if value is None else float(value)

    return {
        "test_mse": test_mse,
        "best_val_mse": number(fitted["best_score"]),
        "last_val_mse": number(fitted["last_val"]),
        "val_rollout_mse_ar": number(fitted["rollout_mse"]),
        "baselines": baselines,
        "ratio_to_copy_last": test_mse / baselines["copy_last"] if baselines["copy_last"] else None,
        "core": cfg.model.core,
        "model": model_label(cfg.model),
        "protocol": cfg.train.protocol,
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": trainer.current_epoch,
        "optimizer_steps": trainer.global_step,
        "train_frames_per_s": fitted["frames_per_s"],
        "fit_seconds": fitted["fit_seconds"],
        "seed": cfg.seed,
        "checkpoint": fitted["best"] or last_checkpoint(out_dir),
        "data_dir": str(cfg.data.dir),
    }


def last_checkpoint(out_dir: Path) -> str | None:
    """The run's last.ckpt, when it has one: what was tested if no best was chosen."""
    path = runs.last_checkpoint(out_dir)
    return str(path) if path.is_file() else None


def model_label(model: DictConfig) -> str:
    """'builtin', 'builtin + flow warp', 'gru + conv encoder + residual': what a run trained."""
    parts = [model.core]
    if model.get("encoder", "flat") != "flat":
        parts.append(f"{model.encoder} encoder")
    if model.get("warp", "none") != "none":
        parts.append(f"{model.warp} warp")
    elif model.get("residual"):
        parts.append("residual")
    if model.get("latent", "none") != "none":
        parts.append(f"{model.latent} latent")
    return " + ".join(parts)


def format_results(r: dict) -> str:
    b = r["baselines"]
    # with no checkpoint_monitor the last epoch is tested: there is no best to name
    tested = ("the last epoch" if r["best_val_mse"] is None
              else f"the epoch with the best val MSE, {r['best_val_mse']:.3g}")
    verdict = "beats" if r["test_mse"] < b["copy_last"] else "does NOT beat"
    return (
        f"{r.get('model', r['core'])} ({r['protocol']}, {r['parameters']:,} parameters, "
        f"{r['epochs']} epochs, "
        f"{r['train_frames_per_s']:.0f} frames/s): test MSE {r['test_mse']:.3g} "
        f"({tested})"
        f"\nbaselines on the same test windows: copy last frame {b['copy_last']:.3g}, "
        f"mean training frame {b['mean_frame']:.3g}; the model {verdict} copying the last frame "
        f"({r['ratio_to_copy_last']:.3g}x)"
    )
