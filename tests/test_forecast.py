"""Forecast metrics on ensembles made by hand, the climatology ensemble, and the Gaussian latent
as a module (no Trainer): which z it draws, and when."""

import math

import numpy as np
import pytest
import torch

from world_models.forecast import (
    FORECAST_METRICS,
    climatology_ensemble,
    energy_score,
    forecast_metrics,
    sequence_generator,
)
from world_models.models.latent import GaussianLatent, kl_weight_now, mean_kl
from world_models.models.world_model import WorldModel

SHAPE = (3, 8, 8)
D = math.prod(SHAPE)  # pixels x channels: the norm's dimension


def truth_frames(steps: int = 4) -> torch.Tensor:
    """[T, 3, 8, 8]: a different smooth pattern at every step, inside [0.3, 0.7]."""
    x = torch.linspace(0, 1, 8)
    pattern = 0.5 + 0.2 * torch.sin(3 * x[:, None] + 2 * x[None, :])  # [8, 8]
    return torch.stack([pattern.roll(t, dims=1).expand(SHAPE) for t in range(steps)])


def test_a_perfect_ensemble_scores_zero():
    truth = truth_frames()
    samples = truth.expand(5, *truth.shape)  # K=5 copies of the truth
    scores = forecast_metrics(samples, truth)
    assert set(scores) == set(FORECAST_METRICS)
    for metric in ("best_mse", "sample_mse", "energy"):
        assert torch.all(scores[metric] == 0), metric
    assert torch.all(scores["mean_mse"] < 1e-12)  # the mean of 5 equal floats, rounded
    torch.testing.assert_close(scores["best_ssim"], torch.ones(4))
    torch.testing.assert_close(scores["sharpness"], torch.ones(4))


def test_constant_offsets_have_the_energy_score_computed_by_hand():
    truth = truth_frames()
    offsets = torch.tensor([0.1, 0.1, 0.3])  # x_k = y + c_k everywhere: ||x_k - y|| = c_k sqrt(D)
    samples = truth + offsets.view(3, 1, 1, 1, 1)  # [K=3, T, 3, 8, 8]
    # mean distance to the truth: (0.1 + 0.1 + 0.3) / 3; the 6 ordered pairs of distinct
    # samples: 2 at distance 0, 4 at 0.2, a mean of 0.8 / 6. Score: 1/6 - 0.4/6 = 0.1, x sqrt(D).
    expected = 0.1 * math.sqrt(D)
    torch.testing.assert_close(energy_score(samples, truth),
                               torch.full((4,), expected, dtype=torch.float64), rtol=1e-5, atol=0)
    scores = forecast_metrics(samples, truth)
    torch.testing.assert_close(scores["best_mse"], torch.full((4,), 0.01))
    torch.testing.assert_close(scores["sample_mse"], torch.full((4,), (0.01 + 0.01 + 0.09) / 3))
    torch.testing.assert_close(scores["mean_mse"], torch.full((4,), (0.5 / 3) ** 2))


def test_one_forecast_repeated_scores_its_distance_whatever_k():
    truth = truth_frames()
    forecast = (truth + 0.05)[None]  # [1, T, 3, 8, 8]
    one = energy_score(forecast, truth)
    torch.testing.assert_close(one, torch.full((4,), 0.05 * math.sqrt(D), dtype=torch.float64),
                               rtol=1e-5, atol=0)
    torch.testing.assert_close(energy_score(forecast.expand(7, *truth.shape), truth), one)
    # Spread earns credit only where it is honest: two samples that bracket the truth beat
    # one at the same distance; two that both miss on one side (0.15, 0.25) score their mean
    # distance less half their spread, 0.2 - 0.05, worse than the one at 0.05.
    bracket = torch.stack([truth + 0.05, truth - 0.05])
    assert torch.all(energy_score(bracket, truth) < one)
    wrong_spread = torch.stack([truth + 0.15, truth + 0.25])
    torch.testing.assert_close(energy_score(wrong_spread, truth), 3 * one, rtol=1e-5, atol=0)


def test_best_of_k_picks_the_nearest_sample_at_each_step():
    truth = truth_frames(2)
    near_first = torch.stack([truth[0], truth[1] + 0.2])  # sample A: exact, then off by 0.2
    near_second = torch.stack([truth[0] + 0.1, truth[1]])  # sample B: off by 0.1, then exact
    scores = forecast_metrics(torch.stack([near_first, near_second]), truth)
    assert torch.all(scores["best_mse"] == 0)
    torch.testing.assert_close(scores["best_ssim"], torch.ones(2))
    torch.testing.assert_close(scores["sample_mse"], torch.tensor([0.005, 0.02]))


def test_climatology_draws_training_frames_the_same_for_the_same_seed():
    # Two "episodes" whose every frame is one grey level, 10 * episode + frame.
    episodes = [np.full((n, 8, 8, 3), 10 * e, np.uint8) + np.arange(n, dtype=np.uint8)[:, None,
                                                                                      None, None]
                for e, n in enumerate((3, 5))]
    pool = {10 * e + f for e, n in enumerate((3, 5)) for f in range(n)}
    ensemble = climatology_ensemble(episodes, 6, 4, sequence_generator(0, 0, 1))
    assert ensemble.shape == (6, 4, 3, 8, 8)
    assert torch.equal(ensemble[:, 0], ensemble[:, 3])  # the same frames at every step
    levels = (ensemble[:, 0, 0, 0, 0] * 255).round().int().tolist()
    assert set(levels) <= pool
    again = climatology_ensemble(episodes, 6, 4, sequence_generator(0, 0, 1))
    assert torch.equal(ensemble, again)
    others = [climatology_ensemble(episodes, 6, 4, sequence_generator(0, i, 1)) for i in (1, 2)]
    assert not all(torch.equal(ensemble, other) for other in others)


# -- the latent ------------------------------------------------------------------------------


def test_the_latent_draws_from_the_posterior_in_training_and_the_prior_mean_otherwise():
    torch.manual_seed(0)
    latent = GaussianLatent(hidden_size=6, frame_features=5, latent_size=4)
    features, next_features = torch.randn(2, 3, 6), torch.randn(2, 3, 5)  # [B, T, ...]
    latent.eval()
    mean = latent(features)
    assert torch.equal(mean, latent(features, next_features))  # the posterior: training only
    seeded = [latent(features, noise=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])
    assert not torch.equal(seeded[0], mean)
    latent.train()
    with latent.recording() as kl_terms:
        drawn = latent(features, next_features, torch.Generator().manual_seed(1))
    assert len(kl_terms) == 1 and kl_terms[0].shape == (2, 3)
    assert torch.all(kl_terms[0] > 0) and mean_kl(kl_terms) > 0
    drawn.sum().backward()  # reparameterised: the posterior net learns from the loss
    assert latent.posterior[0].weight.grad.abs().sum() > 0
    assert latent._kl is None  # nothing recorded outside the block


def test_kl_weight_warms_up_linearly_over_a_fraction_of_the_run():
    assert kl_weight_now(1e-4, 0.5, 0.0) == 0.0
    assert kl_weight_now(1e-4, 0.5, 0.25) == pytest.approx(5e-5)
    assert kl_weight_now(1e-4, 0.5, 0.9) == pytest.approx(1e-4)
    assert kl_weight_now(1e-4, 0.0, 0.0) == 1e-4


def test_a_model_without_a_latent_has_no_latent_parameters():
    assert not any(key.startswith("latent.") for key in WorldModel().state_dict())
    latent = WorldModel(latent="gaussian", latent_size=3)
    assert latent.state_dict()["latent.project.weight"].shape == (128, 3)
