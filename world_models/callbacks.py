"""During training: roll the model out on one fixed validation episode and log the pictures.

Thin on purpose: the rollouts come from rollout.py, the baseline from metrics.py and the
pictures from plots.py; this file only decides when to run them and where the results go.
"""

import io
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image

from world_models import plots
from world_models.errors import UserError
from world_models.metrics import per_step_table
from world_models.rollout import predictions_and_scores

LOGGED = ("mse", "ssim", "road_iou", "sharpness")


class RolloutCallback(Callback):
    """Every `every_n_epochs` validation epochs (0 = never), run teacher forcing and an
    autoregressive rollout of `horizon` steps after `context` true frames, and log

    - the grid (plots.rollout_grid) and the per-step MSE curve (plots.loss_curve) as images
      to W&B and TensorBoard, and always as PNGs in <default_root_dir>/rollouts/
      epoch{E:03d}_grid.png and epoch{E:03d}_loss.png (E counts from 0, as the checkpoints do);
    - `val/rollout_mse_ar` (and `_ssim_ar`, `_road_iou_ar`, `_sharpness_ar`), the
      autoregressive rollout's metrics averaged over the horizon, to every logger.

    The episode is the longest validation episode (the first of equal ones), the same at
    every epoch so the pictures compare; the horizon shrinks to its length if it is shorter.
    """

    def __init__(self, every_n_epochs: int = 5, horizon: int = 50, context: int = 1):
        if every_n_epochs < 0:
            raise UserError(f"callbacks.rollout.every_n_epochs: expected >= 0 (0 = off), "
                            f"got {every_n_epochs}")
        if horizon < 2:  # one true frame and at least one predicted
            raise UserError(f"callbacks.rollout.horizon: expected >= 2, got {horizon}")
        if not 1 <= context < horizon:
            raise UserError(f"callbacks.rollout.context: expected 1 <= context < horizon "
                            f"({horizon}), got {context}")
        self.every_n_epochs, self.horizon, self.context = every_n_epochs, horizon, context
        self.frames = self.actions = None  # [1, T+1, 3, H, W], [1, T, A], picked on first use

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if (not self.every_n_epochs or trainer.sanity_checking
                or (epoch + 1) % self.every_n_epochs):
            return
        # Rank zero alone: the other ranks would only repeat the same pictures.
        if not trainer.is_global_zero or not self._pick_sequence(trainer):
            return
        truth = self.frames[:, 1:]  # [1, T, 3, H, W]
        # Does the rollout beat repeating the last true frame it was given?
        predictions, scores = predictions_and_scores(pl_module, self.frames, self.actions,
                                                     self.context)
        steps = truth.shape[1]
        grid = plots.rollout_grid(truth[0], predictions["teacher_forcing"][0],
                                  predictions["autoregressive"][0], plots.grid_steps(steps))
        curve = figure_image(per_step_table(scores), self.context)
        for metric in LOGGED:  # averaged over the horizon
            pl_module.log(f"val/rollout_{metric}_ar",
                          scores["autoregressive"][metric].mean().item(), rank_zero_only=True)
        self._log_images(trainer, epoch, {"grid": grid, "loss": curve})

    def _pick_sequence(self, trainer) -> bool:
        """Cut the fixed validation episode once; False (with a warning) if there is none."""
        if self.frames is not None:
            return True
        # Any fixed choice compares across epochs; the longest gives the longest horizon.
        sequences = trainer.datamodule.sequences("val")
        sequence = max(sequences, key=lambda s: len(s["actions"]), default=None)
        if sequence is None or len(sequence["actions"]) <= self.context:
            rank_zero_warn("RolloutCallback: no validation episode is longer than "
                           f"callbacks.rollout.context={self.context} steps; no rollouts logged")
            self.every_n_epochs = 0
            return False
        steps = min(self.horizon, len(sequence["actions"]))
        # clone: a view would keep the whole episode alive for the rest of the run.
        self.frames = sequence["frames"][None, : steps + 1].clone()  # [1, T+1, 3, H, W]
        self.actions = sequence["actions"][None, :steps].clone()  # [1, T, A]
        return True

    def _log_images(self, trainer, epoch: int, images: dict[str, Image.Image]) -> None:
        step = trainer.global_step
        for logger in trainer.loggers:
            for name, image in images.items():
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=f"rollout/{name}", images=[image], step=step)
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(f"rollout/{name}", np.asarray(image),
                                                global_step=step, dataformats="HWC")
        # Files too, whatever the loggers: the one record every setup (CSV only, none) shares.
        out_dir = Path(trainer.default_root_dir) / "rollouts"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, image in images.items():
            image.save(out_dir / f"epoch{epoch:03d}_{name}.png")


def figure_image(table: list[dict], context: int) -> Image.Image:
    """plots.loss_curve drawn into memory rather than a file, as an RGB image."""
    buffer = io.BytesIO()
    plots.loss_curve(buffer, table, context)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
