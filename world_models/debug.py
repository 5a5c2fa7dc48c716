"""Callbacks of the debug presets (conf/debug/): the overfit check and the profiler's digest."""

import time

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.profilers import SimpleProfiler

from world_models.errors import UserError


class OverfitCheck(Callback):
    """Stop once the epoch's mean train/loss is below `threshold`; fail if it never gets there.

    Meant for trainer.overfit_batches (the same few batches every epoch): a model that cannot
    drive its loss down on them cannot learn anything, whatever the data.
    """

    def __init__(self, threshold: float):
        if not threshold > 0:
            raise UserError(f"callbacks.overfit.threshold: expected > 0, got {threshold}")
        self.threshold = threshold
        self.best, self.reached_at = float("inf"), None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        loss = trainer.callback_metrics.get("train/loss_epoch")
        if loss is None:
            return
        self.best = min(self.best, float(loss))
        if self.best < self.threshold and self.reached_at is None:
            self.reached_at = trainer.current_epoch
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        if self.reached_at is None:
            raise UserError(
                f"callbacks.overfit.threshold: train/loss never fell below {self.threshold:g} on "
                f"{trainer.overfit_batches} repeated batches in {trainer.current_epoch} epochs "
                f"(lowest {self.best:.3g}); it cannot learn them: check model.lr and model.*")
        print(f"overfit: train/loss {self.best:.3g} < {self.threshold:g} after "
              f"{self.reached_at + 1} epochs on {trainer.overfit_batches} batches: it learns")


class PrintSlowest(Callback):
    """After fitting, print the `top` actions of a SimpleProfiler by their total time.

    Actions nest (run_training_epoch holds run_training_batch, which holds the backward pass),
    so the shares add up to more than 100%; the report file has every action.
    """

    def __init__(self, top: int = 10):
        self.top = top

    def on_fit_end(self, trainer, pl_module) -> None:
        profiler = trainer.profiler
        if not isinstance(profiler, SimpleProfiler):
            return
        wall = time.perf_counter() - profiler.start_time
        durations = profiler.recorded_durations
        rows = sorted(durations.items(), key=lambda kv: sum(kv[1]), reverse=True)[: self.top]
        print(f"slowest actions of {wall:.1f} s of fit (report: {profiler.dirpath}/):")
        print(f"{'total s':>9} {'calls':>6} {'share':>6}  action")
        for name, times in rows:
            name = name if len(name) <= 80 else name[:77] + "..."
            print(f"{sum(times):9.3f} {len(times):6d} {100 * sum(times) / wall:5.1f}%  {name}")
