"""The weights a run ends with: an exponential moving average over the last part of training.

A model trained on its own rollouts ends wherever its last few hundred noisy steps left it, and
how well its rollouts hold on data it never saw varies from seed to seed. Averaging the weights
of those steps (Polyak averaging) smooths that out. Lightning's WeightAveraging keeps the
average and puts it in place for validation, the test, the checkpoints and after training;
this callback decides what goes into it.
"""

import torch
from lightning.pytorch.callbacks import WeightAveraging

from world_models.errors import UserError


class LateAverage(WeightAveraging):
    """From `start` (a fraction of the run's optimizer steps; the default config uses
    train.open_loop.warmup, where training on its own rollouts begins) on, an exponential
    moving average of the trained weights: average = decay * average + (1 - decay) * weights
    after every optimizer step. Before it, the average follows the trained weights exactly, so
    validation, checkpoints and a run stopped early see the weights as trained."""

    def __init__(self, decay: float = 0.99, start: float = 0.7):
        if not 0 <= decay < 1:
            raise UserError(f"callbacks.ema.decay: expected 0 <= decay < 1, got {decay}")
        if not 0 <= start <= 1:
            raise UserError(f"callbacks.ema.start: expected a fraction of the run in [0, 1], "
                            f"got {start}")
        super().__init__(multi_avg_fn=self._blend)
        self.decay, self.start = float(decay), float(start)
        self._trainer = None
        self._keep = 0.0  # the average's share of itself at the next update

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._trainer = trainer

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None:  # once per optimizer step, not again at the epoch's end
            return False
        averaging = step_idx + 1 > self.start * self._trainer.estimated_stepping_batches
        self._keep = self.decay if averaging else 0.0
        return True

    def _blend(self, averages: list[torch.Tensor], weights: list[torch.Tensor], count) -> None:
        # one fused in-place update of every tensor: this runs after every optimizer step.
        # lerp with weight 1 returns the weights exactly, so before `start` the average is a copy
        torch._foreach_lerp_(averages, weights, 1.0 - self._keep)
