"""The model's own random draws in training: input noise and scheduled sampling's or the
open-loop warm-up's draws come from one CPU generator that checkpoints keep, so that a resumed
run draws what an uninterrupted one would have (data loaders draw from the global generator at
moments a resume changes). WorldModel takes it as a mixin."""

import torch


class OwnGenerator:
    """training_generator(), noisy() and the checkpoint hooks that keep the generator's state;
    for a LightningModule with hparams.input_noise."""

    _rng: torch.Generator | None = None
    _rng_state: torch.Tensor | None = None  # from a checkpoint, until the generator is made

    def training_generator(self) -> torch.Generator:
        """The CPU generator of input noise and scheduled sampling's draws, seeded from the
        run's seed and the process's rank."""
        if self._rng is None:
            self._rng = torch.Generator().manual_seed(torch.initial_seed() + self.global_rank)
            if self._rng_state is not None:
                self._rng.set_state(self._rng_state)
        return self._rng

    def noisy(self, frames) -> torch.Tensor:
        """Input frames with train.input_noise Gaussian noise (training inputs only)."""
        sigma = self.hparams.input_noise
        if not sigma:
            return frames
        noise = torch.randn(frames.shape, generator=self.training_generator())
        return frames + sigma * noise.to(frames.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._rng is not None:
            checkpoint["training_generator"] = self._rng.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng, self._rng_state = None, checkpoint.get("training_generator")
