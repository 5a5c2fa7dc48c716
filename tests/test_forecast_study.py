"""`make compare STUDY=stochastic` (conf/study/stochastic.yaml, world_models/forecast_study.py):
the goals, table and figure from hand-made runs (fast), and the real command line on the tiny
dataset (slow). Variants, reference and K come from the study file."""

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from tests.helpers import ROOT
from world_models import compare, forecast_study, studies
from world_models.errors import UserError
from world_models.report import merge

STUDY = studies.load_study("stochastic")
STEPS = 150
T = np.arange(1, STEPS + 1)
COPY, MEAN = 0.02 * T / STEPS, np.full(STEPS, 0.01)  # the baselines' MSE per step


def latent_of(words: list[str]) -> str:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        train_words, _ = compare.variant_words(words)
        return compose("train", overrides=merge(STUDY["train"], train_words)).model.latent


def run(test_mse, forecast: dict, own_mean_energy=4.0, samples=16) -> dict:
    """A loaded run (comparison.load_run's shape). forecast: metric -> per-step curve of the
    variant's own ensemble; `sampled` if it has an energy beside the z-at-mean rollout's."""
    own = "sampled" if "det_energy" not in forecast else "deterministic"
    by_metric = {"mse": {"copy_last": COPY, "mean_frame": MEAN},
                 "road_iou": {"mean_frame": np.full(STEPS, 0.05)},
                 "energy": {"climatology": np.full(STEPS, 3.5), "copy_last": np.full(STEPS, 6.0),
                            "mean_frame": np.full(STEPS, 5.5),
                            "deterministic": np.full(STEPS, own_mean_energy)},
                 "best_mse": {"climatology": np.full(STEPS, 0.004)}}
    for metric, values in forecast.items():
        if metric != "det_energy":
            by_metric.setdefault(metric, {})[own] = np.asarray(values, dtype=float)
    summary = {"forecast": {"samples": samples}, "sequences": 2, "horizon": STEPS, "context": 1,
               "data": {"dir": "d"}}
    return {"dir": "r", "by_metric": by_metric, "summary": summary,
            "results": {"test_mse": test_mse, "fit_seconds": 60.0}}


def deterministic_run():
    return run(1e-4, {"det_energy": True, "best_mse": 0.9 * np.minimum(COPY, MEAN),
                      "sharpness": np.full(STEPS, 0.5), "road_iou": np.full(STEPS, 0.5)})


def good_run():
    return run(1.2e-4, {"best_mse": 0.5 * np.minimum(COPY, MEAN), "energy": np.full(STEPS, 3.0),
                        "sharpness": np.full(STEPS, 0.9), "road_iou": np.full(STEPS, 0.3)})


def late_run():
    """Beats climatology until step 99, blurry for 10 steps, at the mean frame's MSE at
    150, and twice the default's one-step MSE."""
    best = 0.5 * np.minimum(COPY, MEAN)
    best[-1] = 0.01
    return run(2e-4, {"best_mse": best, "energy": np.where(T < 100, 3.0, 3.8),
                      "sharpness": np.where(T <= 10, 0.7, 0.9),
                      "road_iou": np.full(STEPS, 0.3)})


def test_the_shipped_study_compares_the_default_with_latent_models_at_k16():
    reference = STUDY["variants"][STUDY["reference"]]
    assert STUDY["page"] == "forecasts" and latent_of(reference) == "none"
    latents = [latent_of(words) for words in STUDY["variants"].values()]
    assert latents.count("gaussian") >= 1
    assert {"rollout.samples=16", "rollout.horizon=150"} <= set(STUDY["evaluate"])


def test_goals_per_variant_from_the_runs():
    runs = {"deterministic": [deterministic_run()], "good": [good_run()], "late": [late_run()]}
    good = forecast_study.verdicts("good", runs, "deterministic")
    assert all(met for met, _ in good.values()), good
    assert list(good)[0] == "1. best-of-16 MSE below copy-first and mean-frame"
    goal1, goal2, goal3, goal4 = forecast_study.verdicts("late", runs, "deterministic").values()
    assert goal1 == (False, "MSE >= mean-frame at 1 steps (150)")
    # 3.8 is above climatology (3.5), not above the deterministic variant nor its own mean (4.0)
    assert goal2 == (False, "energy >= climatology at 51 steps (100-150)")
    assert goal3 == (False, "sharpness < 0.8 at 10 steps (1-10)")
    assert goal4 == (False, "2.00x")
    det = forecast_study.verdicts("deterministic", runs, "deterministic")
    goal1, goal2, goal3, goal4 = det.values()
    assert goal1[0] and goal4 == (True, "1.00x")
    # a deterministic variant is not its own reference: only climatology's energy is held to it
    assert goal2 == (False, "energy >= climatology at 150 steps (1-150)")
    assert goal3 == (False, "sharpness < 0.8 at 150 steps (1-150)")


def test_page_table_and_figure(tmp_path):
    runs = {"deterministic": [deterministic_run()], "good": [good_run()], "late": [late_run()]}
    study = {**STUDY, "variants": {"deterministic": [], "good": ["experiment=stochastic"],
                                   "late": ["experiment=stochastic"]}}
    path = forecast_study.write("stochastic", study, runs, tmp_path / "out",
                                {"root": tmp_path, "walls": {"train good": 120.0}})
    text = path.read_text()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
            for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert list(rows) == ["variant", "deterministic", "good", "late", "climatology",
                          "copy-first", "mean frame"]
    assert rows["good"][:3] == ["sampled (K=16)", "0.00012", "1.20"]
    assert rows["deterministic"][0] == "deterministic (K=16)"
    assert rows["good"][6:10] == ["3.000", "3.000", "3.000", "3.000"]  # energy @10/50/150, mean
    assert rows["mean frame"][3:7] == ["0.0100", "0.0100", "0.0100", "5.500"]
    assert text.count("**MET**") == 4 + 2 and text.count("**NOT MET**") == 4 + 2
    assert "- 4. one-step MSE <= 1.5x deterministic's: **NOT MET** (2.00x)" in text
    assert (tmp_path / "out" / "figures" / "stochastic_forecasts.png").stat().st_size > 5000


def test_a_run_evaluated_without_samples_is_named():
    lone = run(1e-4, {})
    del lone["by_metric"]["energy"]
    with pytest.raises(UserError, match="rollout.samples"):
        forecast_study.forecast_of([lone])


def test_a_forecast_page_needs_a_reference_variant(tmp_path, monkeypatch):
    (tmp_path / "s.yaml").write_text("page: forecasts\nreference: nope\nvariants: {a: []}\n")
    monkeypatch.setattr(studies, "STUDY_DIR", tmp_path)
    with pytest.raises(UserError, match="reference: expected the name of a variant"):
        studies.load_study("s")
    (tmp_path / "s.yaml").write_text("page: poster\nvariants: {a: []}\n")
    with pytest.raises(UserError, match="page: expected one of open_loop, forecasts"):
        studies.load_study("s")


@pytest.mark.slow
def test_make_compare_stochastic_end_to_end(run_cli, tiny_data, tmp_path):
    out = tmp_path / "reports"
    proc = run_cli("-m", "world_models.compare", "--study", "stochastic", "--dir",
                   str(tmp_path / "runs"), "--out", str(out), f"data.dir={tiny_data}",
                   "data=tiny", "data.collect=false", "trainer.max_epochs=1",
                   "model.hidden_size=16", "rollout.horizon=20", "rollout.samples=3",
                   timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "COMPARISON_stochastic.md").read_text()
    for variant in STUDY["variants"]:
        block = text.split(f"**{variant}**\n")[1].split("\n\n")[0].splitlines()
        assert len(block) == 4 and all("MET**" in line for line in block), block
        assert block[0].startswith("- 1. best-of-3 MSE")
    assert "K=3 samples per episode" in text
    assert (out / "figures" / "stochastic_forecasts.png").stat().st_size > 5000
