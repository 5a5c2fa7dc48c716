"""The world model: (frame_t, action_t) -> frame_{t+1}, around a swappable recurrent core.

As in the course report: the frame is flattened and concatenated with the action,
a recurrent core carries the state, a linear decoder paints the next frame.
"""

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from world_models.errors import UserError
from world_models.models.cores import CORES, build_core

PROTOCOLS = ("bptt", "per_step")


class NonFiniteLossError(UserError):
    """Training diverged; the message names the step."""


class WorldModel(L.LightningModule):
    def __init__(
        self,
        core: str = "builtin",
        hidden_size: int = 128,
        lr: float = 3e-4,
        frame_shape: tuple[int, int, int] = (3, 32, 32),
        action_size: int = 3,
        protocol: str = "bptt",
    ):
        super().__init__()
        check_hparams(core, hidden_size, lr, protocol)
        # Only plain values are saved, so load_from_checkpoint rebuilds the core.
        self.save_hyperparameters()
        self.frame_shape = tuple(frame_shape)
        frame_size = math.prod(self.frame_shape)
        self.core = build_core(core, frame_size + action_size, hidden_size)
        self.decoder = nn.Linear(hidden_size, frame_size)
        # per_step reproduces the course's loop: an optimizer step after every time step.
        self.automatic_optimization = protocol == "bptt"

    def forward(self, frames, actions, state=None):
        """frames [B, T, 3, H, W], actions [B, T, A] -> next frames [B, T, 3, H, W], state."""
        B, T = frames.shape[:2]
        inputs = torch.cat([frames.reshape(B, T, -1), actions], dim=-1)  # [B, T, 3HW + A]
        features, state = self.core(inputs, state)  # [B, T, hidden]
        next_frames = self.decoder(features).view(B, T, *self.frame_shape)  # [B, T, 3, H, W]
        return next_frames, state

    def window_loss(self, batch) -> torch.Tensor:
        """MSE of the predictions of frames 1..L-1 of each window, from frames 0..L-2."""
        frames, actions = batch["frames"], batch["actions"]  # [B, L, 3, H, W], [B, L, A]
        next_frames_pred, _ = self(frames[:, :-1], actions[:, :-1])
        return F.mse_loss(next_frames_pred, frames[:, 1:])

    def training_step(self, batch, batch_idx):
        if self.hparams.protocol == "per_step":
            loss = self._per_step_update(batch)
        else:
            loss = self.window_loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"train/loss is {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); lower model.lr or check the data"
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(batch["frames"]))
        return loss if self.automatic_optimization else None

    def _per_step_update(self, batch) -> torch.Tensor:
        """The course's loop: predict one step, step the optimizer, detach the state, go on."""
        optimizer = self.optimizers()
        frames, actions = batch["frames"], batch["actions"]
        state, losses = None, []
        for t in range(frames.shape[1] - 1):
            next_frame_pred, state = self(frames[:, t : t + 1], actions[:, t : t + 1], state)
            loss = F.mse_loss(next_frame_pred, frames[:, t + 1 : t + 2])
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            state = tuple(s.detach() for s in state)
            losses.append(loss.detach())
        return torch.stack(losses).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.window_loss(batch), prog_bar=True, sync_dist=True,
                 batch_size=len(batch["frames"]))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self.window_loss(batch), sync_dist=True,
                 batch_size=len(batch["frames"]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def check_hparams(core: str, hidden_size: int, lr: float, protocol: str) -> None:
    """Refuse impossible settings before anything is built, naming the key."""
    if core not in CORES:
        raise UserError(f"model.core: unknown core '{core}'; available: {', '.join(sorted(CORES))}")
    if hidden_size <= 0:
        raise UserError(f"model.hidden_size: expected > 0, got {hidden_size}")
    if not lr > 0:
        raise UserError(f"model.lr: expected > 0, got {lr}")
    if protocol not in PROTOCOLS:
        raise UserError(f"train.protocol: expected one of {', '.join(PROTOCOLS)}, got '{protocol}'")
