"""A per-step Gaussian latent: sampled futures instead of the average one (``model.latent``).

A model trained with MSE alone predicts the mean of the futures it cannot tell apart, and where
the road ahead is unknown that mean is a blur. As in SVG-LP (Denton & Fergus 2018), a latent
z_t [B, T, Z] says which of those futures to paint:

    prior      p(z_t | h_t)              a small MLP on the core's output h_t [B, T, Hd]
    posterior  q(z_t | h_t, e(x_{t+1}))  the same, also given the encoding of the true next frame
    features   h_t + W z_t               what the decoder, the warp and the keep gate read

h_t is the core's output after it has seen frame t and action t, so the prior knows everything
the model knows before frame t+1. z_t goes to the decoder side, not into the core: the prior
then conditions on the current frame and action, a teacher-forced window stays one core call
(the latent is drawn for every step at once), and every core works unchanged. The sampled
choice still reaches later steps in a rollout, through the frame the model feeds back.

Which z is used (``GaussianLatent.forward``): in training, given the true next frames, a draw
from the posterior (reparameterised, so gradients reach both nets), and KL(q || p) per step is
recorded; given a generator (a sampled rollout), a draw from the prior; otherwise the prior's
mean, so teacher forcing, val/loss and the default rollout stay deterministic.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from world_models.errors import UserError

LATENTS = ("none", "gaussian")
# The least standard deviation of the prior and the posterior, as DreamerV1's min_std. The KL
# does not change when both Gaussians shrink together, and the noise of a posterior draw costs
# reconstruction, so without a floor both shrink until z is nearly fixed (measured: std 0.02
# after 2 epochs of the default data) and the prior's samples barely differ.
MIN_STD = 0.1


class GaussianLatent(nn.Module):
    """The prior and posterior nets and the map of z into the core's features."""

    def __init__(self, hidden_size: int, frame_features: int, latent_size: int) -> None:
        super().__init__()
        self.latent_size = latent_size
        self.prior = _gaussian_head(hidden_size, hidden_size, latent_size)
        self.posterior = _gaussian_head(hidden_size + frame_features, hidden_size, latent_size)
        self.project = nn.Linear(latent_size, hidden_size)
        self._kl: list[Tensor] | None = None  # a list while recording()

    def forward(self, features: Tensor, next_features: Tensor | None = None,
                noise: torch.Generator | None = None) -> Tensor:
        """features [B, T, Hd] -> features + W z [B, T, Hd].

        next_features [B, T, F]: the encoded true next frames, only read in training (the
        posterior); noise: a CPU generator for draws (the posterior's in training, the prior's
        otherwise). Without a generator outside training, z is the prior's mean.
        """
        prior = self._normal(self.prior(features))  # [B, T, Z]
        if self.training and next_features is not None:
            posterior = self._normal(self.posterior(torch.cat([features, next_features], -1)))
            z = _draw(posterior, noise)
            if self._kl is not None:
                self._kl.append(kl_divergence(posterior, prior).sum(dim=-1))  # [B, T]
        elif noise is not None:
            z = _draw(prior, noise)
        else:
            z = prior.mean
        return features + self.project(z)

    @staticmethod
    def _normal(params: Tensor) -> Normal:
        mean, raw_std = params.chunk(2, dim=-1)  # [B, T, Z] each
        return Normal(mean, F.softplus(raw_std) + MIN_STD)

    @contextmanager
    def paused(self):
        """Record no KL inside the block (a pass whose draws are replayed with gradients)."""
        kl, self._kl = self._kl, None
        try:
            yield
        finally:
            self._kl = kl

    @contextmanager
    def recording(self):
        """Collect KL(q || p) [B, T] of every posterior draw inside the block, into a list."""
        self._kl = []
        try:
            yield self._kl
        finally:
            self._kl = None


def _gaussian_head(input_size: int, hidden_size: int, latent_size: int) -> nn.Module:
    """An MLP to the mean and the raw standard deviation of a diagonal Gaussian, [..., 2Z]."""
    return nn.Sequential(nn.Linear(input_size, hidden_size), nn.Tanh(),
                         nn.Linear(hidden_size, 2 * latent_size))


def _draw(normal: Normal, noise: torch.Generator | PersistentNoise | None) -> Tensor:
    """mean + std * eps with eps from `noise` on the CPU (the global generator if None), so
    that a seeded rollout or a resumed run draws the same numbers on any device."""
    eps = standard_normal(noise, normal.mean.shape, normal.mean.dtype)
    return normal.mean + normal.stddev * eps.to(normal.mean.device)


def standard_normal(noise, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """Standard normal draws [shape] on the CPU from a generator (the global one if None), or
    from a noise object's own standard_normal (PersistentNoise, RecordedNoise, ReplayedNoise)."""
    if noise is None or isinstance(noise, torch.Generator):
        return torch.randn(shape, generator=noise, dtype=dtype)
    return noise.standard_normal(shape, dtype)


class RecordedNoise:
    """Draws from `noise` (a generator or noise object), kept in order: a pass without
    gradients records what a second pass over the same steps replays (models/scheduled.py)."""

    def __init__(self, noise) -> None:
        self.noise, self.draws = noise, []

    def standard_normal(self, shape: torch.Size, dtype: torch.dtype) -> Tensor:
        self.draws.append(standard_normal(self.noise, shape, dtype))  # [B, T, Z]
        return self.draws[-1]

    def replay(self) -> ReplayedNoise | None:
        """The draws for one call over the same steps; None if there were none (z was the
        prior's mean)."""
        return ReplayedNoise(torch.cat(self.draws, dim=1)) if self.draws else None


class ReplayedNoise:
    """The recorded draws of every step at once, [B, T, Z], for one call over those steps."""

    def __init__(self, eps: Tensor) -> None:
        self.eps = eps

    def standard_normal(self, shape: torch.Size, dtype: torch.dtype) -> Tensor:
        if tuple(shape) != tuple(self.eps.shape):
            raise ValueError(f"replayed noise is {tuple(self.eps.shape)}, asked {tuple(shape)}")
        return self.eps.to(dtype)


class PersistentNoise:
    """The standard normal draws of one sampled rollout, correlated over its steps
    (``evaluate.py rollout.persistence``): eps_t = rho eps_(t-1) + sqrt(1 - rho^2) n_t with n_t
    from `generator`, so every step's eps is still N(0, 1) and z still a draw of that step's
    prior, but a sample keeps leaning the same way for about 1 / (1 - rho) steps instead of
    averaging its choices out. rho = 0: independent draws, as in training. Draws are
    [B, T, Z] per call, T steps in a row (a rollout's first call covers its context).

    temperature (``evaluate.py rollout.temperature``): every eps times this, so z is drawn
    from the prior with its spread scaled (1: the prior itself)."""

    def __init__(self, generator: torch.Generator, persistence: float,
                 temperature: float = 1.0) -> None:
        self.generator, self.rho = generator, float(persistence)
        self.temperature = float(temperature)
        self._last: Tensor | None = None  # [B, 1, Z], the previous step's eps

    def standard_normal(self, shape: torch.Size, dtype: torch.dtype) -> Tensor:
        fresh = torch.randn(shape, generator=self.generator, dtype=dtype)  # [B, T, Z]
        if self._last is None or self._last.shape[0] != shape[0]:
            self._last = fresh[:, :1]  # a rollout's first step: a plain draw
            fresh = fresh[:, 1:]
            steps = [self._last]
        else:
            steps = []
        for t in range(fresh.shape[1]):
            self._last = self.rho * self._last + (1 - self.rho**2) ** 0.5 * fresh[:, t : t + 1]
            steps.append(self._last)
        return self.temperature * torch.cat(steps, dim=1)


def not_recording(latent: GaussianLatent | None):
    """latent.paused(), or nothing for a model without a latent."""
    return nullcontext() if latent is None else latent.paused()


def mean_kl(kl_terms: list[Tensor]) -> Tensor:
    """The mean KL per step over every recorded draw (0 if none)."""
    if not kl_terms:
        return torch.zeros(())
    return torch.cat([kl.flatten() for kl in kl_terms]).mean()


def kl_weight_now(kl_weight: float, kl_warmup: float, progress: float) -> float:
    """model.kl_weight, reached linearly over the first model.kl_warmup of the run (a fraction
    of its optimizer steps; 0: from the start). Early on, a full-weight KL would push the
    posterior onto the prior before the decoder has learned to read z, and z would go unused."""
    if not kl_warmup:
        return kl_weight
    return kl_weight * min(progress / kl_warmup, 1.0)


def check_latent(latent: str, latent_size: int, kl_weight: float, kl_warmup: float,
                 protocol: str = "bptt") -> None:
    """Refuse latent settings that cannot work, naming the key."""
    if latent not in LATENTS:
        raise UserError(f"model.latent: expected one of {', '.join(LATENTS)}, got '{latent}'")
    if latent != "none" and protocol != "bptt":
        raise UserError(f"model.latent: needs train.protocol=bptt (the KL term is added to "
                        f"each window's loss), got {protocol}")
    if not isinstance(latent_size, int) or latent_size < 1:
        raise UserError(f"model.latent_size: expected an integer >= 1, got {latent_size}")
    if not kl_weight >= 0:
        raise UserError(f"model.kl_weight: expected >= 0, got {kl_weight}")
    if not 0.0 <= kl_warmup <= 1.0:
        raise UserError(f"model.kl_warmup: expected a fraction of the run in [0, 1], "
                        f"got {kl_warmup}")
