"""The world model: (frame_t, action_t) -> frame_{t+1}, around a swappable sequence core.

forward = advance (encode the frame, step the core) + paint (decode, warp, fade, still gate);
the options are models/hparams.py's, the training rollouts models/sampling.py's and scheduled.py's,
the training's random draws models/seeded.py's.
"""

from contextlib import ExitStack

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn

from world_models.errors import UserError
from world_models.models import warps
from world_models.models.cores import build_core
from world_models.models.frames import build_frame_codec
from world_models.models.hparams import ModelSettings
from world_models.models.latent import GaussianLatent, kl_weight_now, mean_kl
from world_models.models.losses import SSIM_STRIDE, objective
from world_models.models.sampling import (
    OWN_STEP_FEATURES,
    open_loop_horizon,
    open_loop_loss,
    own_steps_features,
    true_frame_probability,
    with_decay_steps,
)
from world_models.models.scheduled import scheduled_rollout
from world_models.models.seeded import OwnGenerator


class NonFiniteLossError(UserError):
    """Training diverged; the message names the step."""


class WorldModel(OwnGenerator, L.LightningModule):
    def __init__(self, settings: ModelSettings | None = None, **values):
        """The model `settings` describes (models/hparams.py), or ModelSettings(**values): the
        keywords are its fields, as a checkpoint stores them."""
        super().__init__()
        if settings is None:
            settings = ModelSettings(**values)
        elif values:
            raise TypeError(f"WorldModel: settings or keywords, not both ({', '.join(values)})")
        settings.check()
        self.settings = s = settings
        # Only plain values are saved, so load_from_checkpoint rebuilds the model from them.
        self.save_hyperparameters(s.as_dict())
        self.frame_shape = s.frame_shape
        self.encoder, self.decoder = build_frame_codec(s.encoder, self.frame_shape, s.hidden_size)
        extra = OWN_STEP_FEATURES if s.own_steps_input else 0
        self.core = build_core(s.core, self.encoder.output_size + s.action_size + extra,
                               s.hidden_size)
        # what the still gate reads: the core's state, or a tracker of the actions (warps.py)
        tracks = s.still and s.still_reads == "actions"
        self.tracker = (warps.StillTracker(self.encoder.output_size, s.action_size,
                                           OWN_STEP_FEATURES) if tracks else None)
        # rollouts (sampling.unroll) pass own_steps to a model that says it reads them
        self.counts_own_steps = s.own_steps_input or s.fade or self.tracker is not None
        self.warp = warps.build_warp(s.warp, self.frame_shape, s.hidden_size)
        self.gate = warps.KeepGate(self.frame_shape, s.hidden_size, s.fill) if s.gate else None
        self.fade = (warps.Fade(self.frame_shape, s.hidden_size, OWN_STEP_FEATURES,
                                learn_frame=s.fade_frame == "learned") if s.fade else None)
        still_inputs = s.hidden_size if self.tracker is None else warps.StillTracker.SIZE
        self.still = (warps.StillGate(still_inputs, self.frame_shape, s.still_grid, s.still_floor)
                      if s.still else None)
        self.latent = (GaussianLatent(s.hidden_size, self.encoder.output_size, s.latent_size)
                       if s.latent == "gaussian" else None)  # models/latent.py
        if s.residual or self.warp is not None:  # an untrained residual model copies the last
            self.decoder.zero_output_()          # frame
        # per_step reproduces the course's loop: an optimizer step after every time step.
        self.automatic_optimization = s.protocol == "bptt"
        self._schedule = None  # see scheduled_sampling()
        self._still_open = []  # see on_validation_epoch_end()
        self._charges_trust = self.fade is not None and s.fade_penalty > 0  # see fade_loss()
        for half in ("_core_inputs", "paint") if s.compile else ():  # see _core_inputs
            setattr(self, half, torch.compile(getattr(self, half)))

    def forward(self, frames, actions, state=None, own_steps: int = 0, targets=None,
                noise: torch.Generator | None = None, gates=None):
        """frames [B, T, 3, H, W], actions [B, T, A] -> next frames [B, T, 3, H, W], state.

        own_steps: how many steps the model has been feeding on its own predictions when it
        sees these frames (0: true frames); read with model.own_steps_input, else ignored.
        targets, noise: the true next frames and a generator, which a latent draws z with.
        gates: runs an LSTM core in place of core(x, state), to record or reuse its input
        gates (scheduled sampling's two passes, models/scheduled.py).
        """
        clock = self.clock(own_steps, actions)
        features, state = self.advance(frames, actions, state, clock, targets, noise, gates)
        return self.paint(features, frames, clock), state

    def clock(self, own_steps: int, actions) -> torch.Tensor | None:
        """What the model reads of its own steps, [B, T, 2], or None if it reads nothing."""
        return own_steps_features(own_steps, actions) if self.counts_own_steps else None

    def advance(self, frames, actions, state, clock, targets=None, noise=None, gates=None):
        """The first half of forward: the features [B, T, hidden] paint reads, and the state.
        With a still tracker, its output [B, T, StillTracker.SIZE] follows the core's features
        in the last dimension, and its state follows the core's in the state tuple."""
        core_inputs = self._core_inputs(frames, actions, clock)
        tracker_state = None
        if state is not None and self.tracker is not None:
            state, tracker_state = state[:-1], state[-1]
        features, state = (self.core(core_inputs, state) if gates is None
                           else gates.run(self.core, core_inputs, state))
        if self.latent is not None:
            encoded = None if targets is None else self.encoder(targets)  # [B, T, F]
            features = self.latent(features, encoded, noise)
        if self.tracker is not None:
            encoded = core_inputs[..., : self.tracker.frame_features]  # the encoder's part
            tracked, tracker_state = self.tracker(encoded, actions, clock, tracker_state)
            features, state = torch.cat([features, tracked], -1), (*state, tracker_state)
        return features, state

    # model.compile compiles these two halves of a step; the core (nn.LSTM's fused kernel) and
    # the latent (it draws from a generator) stay eager. The own-steps count comes as a tensor,
    # clock [B, T, 2] or None: an int that changes every step would recompile them.
    def _core_inputs(self, frames, actions, clock):  # -> [B, T, F + A (+ 2)]
        parts = [self.encoder(frames), actions]  # [B, T, F], [B, T, A]
        return torch.cat([*parts, clock] if self.hparams.get("own_steps_input") else parts, -1)

    def paint(self, features, frames, clock):  # features [B, T, hidden]
        """The second half of forward: the next frames [B, T, 3, H, W] from the features and
        the frames [B, T, 3, H, W] the model was given."""
        features, still_inputs = self.still_inputs(features)
        next_frames = self.decoder(features)  # [B, T, 3, H, W]
        # The change is added to the frame the model was given (noisy, in training), warped.
        if self.warp is not None or self.hparams.residual:
            carried = frames if self.warp is None else self.warp(features, frames)
            if self.gate is not None:  # where the model forgets, the fill and paint are all
                carried = self.gate(features, carried)
            next_frames = carried + next_frames
        if self.fade is not None:
            next_frames = self.fade(features, clock, next_frames)
        if self.still is not None:
            next_frames = self.still(still_inputs, frames, next_frames)
        return next_frames

    def still_inputs(self, features) -> tuple[torch.Tensor, torch.Tensor]:
        """advance's features split into the core's (what the heads read) and what the still
        gate reads: the core's too, or the still tracker's output that follows them."""
        if self.tracker is None:
            return features, features
        size = self.hparams.hidden_size
        return features[..., :size], features[..., size:]

    def window_loss(self, batch) -> torch.Tensor:
        """MSE of the predictions of frames 1..L-1 of each window, from frames 0..L-2."""
        return F.mse_loss(self.teacher_forced(batch)[0], batch["frames"][:, 1:])

    def teacher_forced(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """forward on frames 0..L-2 of each window: the predictions [B, L-1, 3, H, W] and the
        features [B, L-1, hidden] they were painted from."""
        frames, actions = batch["frames"][:, :-1], batch["actions"][:, :-1]
        clock = self.clock(0, actions)
        features, _ = self.advance(frames, actions, None, clock)
        return self.paint(features, frames, clock), features

    def objective(self, next_frames_pred, next_frames) -> torch.Tensor:
        """The training loss (models/losses.py: MSE plus model.l1_weight, model.ssim_weight
        and model.log_mse_weight terms); the SSIM term's frames move with the global step."""
        h = self.hparams
        return objective(next_frames_pred, next_frames, h.l1_weight, h.get("ssim_weight", 0.0),
                         h.get("log_mse_weight", 0.0), self.global_step % SSIM_STRIDE)

    def training_step(self, batch, batch_idx):
        if self.hparams.protocol == "per_step":
            loss = self._per_step_update(batch)
        else:
            with ExitStack() as recordings:  # what the latent and the fade's penalty charge
                kl_terms = (None if self.latent is None
                            else recordings.enter_context(self.latent.recording()))
                trust = (recordings.enter_context(self.fade.recording())
                         if self._charges_trust else None)
                loss = self._window_update(batch)
            if kl_terms is not None:
                loss = loss + self.kl_loss(kl_terms, len(batch["frames"]))
            if trust is not None:
                loss = loss + self.fade_loss(trust, len(batch["frames"]))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"train/loss is {loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); lower model.lr or check the data"
            )
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(batch["frames"]))
        return loss if self.automatic_optimization else None

    def _window_update(self, batch) -> torch.Tensor:
        """The loss of one window, teacher forced or with scheduled sampling; targets are clean."""
        frames, actions = batch["frames"], batch["actions"]  # [B, L, 3, H, W], [B, L, A]
        inputs = self.noisy(frames)  # scheduled sampling feeds back its predictions unnoised
        if self.hparams.open_loop["horizon"]:
            loss, horizon = open_loop_loss(self, inputs, frames, actions)
            self.log("train/open_loop_horizon", float(horizon), on_step=True, on_epoch=False)
            return loss
        if self.hparams.scheduled_sampling["schedule"] == "none":
            next_frames_pred, _ = self(inputs[:, :-1], actions[:, :-1],
                                       **self.posterior_inputs(frames[:, 1:]))
        else:
            prob = true_frame_probability(self.scheduled_sampling(), self.global_step)
            self.log("train/teacher_forcing_prob", prob, on_step=True, on_epoch=False)
            next_frames_pred = scheduled_rollout(
                self, inputs, actions[:, :-1], prob, self.training_generator(),
                self.hparams.scheduled_sampling.get("draw", "sequence"),
                **self.posterior_inputs(frames[:, 1:]))
        return self.objective(next_frames_pred, frames[:, 1:])

    def scheduled_sampling(self) -> dict:
        """train.scheduled_sampling with its decay in optimizer steps of this run."""
        if self._schedule is None:
            total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
            self._schedule = with_decay_steps(self.hparams.scheduled_sampling, total)
        return self._schedule

    def posterior_inputs(self, next_frames) -> dict:
        """What a latent model's forward needs to draw z from its posterior in training: the
        true next frames and the training generator (so a resumed run draws the same)."""
        return {} if self.latent is None else {"targets": next_frames,
                                               "noise": self.training_generator()}

    def kl_loss(self, kl_terms, batch_size: int) -> torch.Tensor:
        """model.kl_weight (warmed up over model.kl_warmup of the run) x the mean KL per step."""
        kl = mean_kl(kl_terms).to(self.device)
        weight = kl_weight_now(self.hparams.kl_weight, self.hparams.kl_warmup, self.run_progress())
        self.log("train/kl", kl, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("train/kl_weight", weight, on_step=True, on_epoch=False)
        return weight * kl

    def fade_loss(self, trust, batch_size: int) -> torch.Tensor:
        """model.fade_penalty x the fade's mean trust over its own-prediction steps (or 0)."""
        mean = warps.Fade.mean_trust(trust)
        if mean is None:  # teacher forcing: no own-prediction steps
            return torch.zeros((), device=self.device)
        self.log("train/fade_trust", mean, on_step=True, on_epoch=True, batch_size=batch_size)
        return self.hparams.fade_penalty * mean

    def run_progress(self) -> float:
        """The fraction of the run's optimizer steps taken, 0 outside a fit."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        return min(self.global_step / total, 1.0) if total else 0.0

    def open_loop_horizon(self) -> int:
        """Open-loop steps per window now (sampling.open_loop_horizon)."""
        return open_loop_horizon(self.hparams.open_loop, self.run_progress())

    def _per_step_update(self, batch) -> torch.Tensor:
        """The course's loop: predict one step, step the optimizer, detach the state, go on."""
        optimizer = self.optimizers()
        frames, actions = batch["frames"], batch["actions"]
        inputs = self.noisy(frames)
        state, losses = None, []
        for t in range(frames.shape[1] - 1):
            next_frame_pred, state = self(inputs[:, t : t + 1], actions[:, t : t + 1], state)
            loss = self.objective(next_frame_pred, frames[:, t + 1 : t + 2])
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            state = tuple(s.detach() for s in state)
            losses.append(loss.detach())
        return torch.stack(losses).mean()

    def validation_step(self, batch, batch_idx):
        predictions, features = self.teacher_forced(batch)
        self.log("val/loss", F.mse_loss(predictions, batch["frames"][:, 1:]), prog_bar=True,
                 sync_dist=True, batch_size=len(predictions))
        if self.still is not None:  # how open the still gate is: val/still_open
            self._still_open.append(self.still.opening(self.still_inputs(features)[1]).mean())

    def on_validation_epoch_start(self) -> None:
        self._still_open = []

    def on_validation_epoch_end(self) -> None:
        """Log the still gate's mean opening over the validation windows, and say so in one
        line if it has shut (on jerkier data it can, and the model then copies its input)."""
        if self.still is None or not self._still_open:
            return
        opening = torch.stack(self._still_open).mean()
        self.log("val/still_open", opening, sync_dist=True)
        if opening < warps.StillGate.SHUT and not self.trainer.sanity_checking:
            rank_zero_warn(
                f"epoch {self.current_epoch}: the still gate has shut (val/still_open "
                f"{opening.item():.2g}): the model is passing its input frames on. It can reopen "
                "slowly; if it does not, try model.still_lr_scale=10 "
                "(docs/training.md#on-your-own-data-the-still-gate)")

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self.window_loss(batch), sync_dist=True,
                 batch_size=len(batch["frames"]))

    def configure_optimizers(self):
        h = self.hparams
        groups = warps.gate_param_groups(self, h.lr, h.get("fade_lr_scale", 1.0),
                                   h.get("still_lr_scale", 1.0))
        return torch.optim.Adam(groups, lr=self.hparams.lr)
