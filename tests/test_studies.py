"""Studies (conf/study/*.yaml, `make compare STUDY=...`): every shipped study composes with the
real configs, and the goals are judged from the runs' files."""

import json
import math

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers import ROOT
from world_models import compare, comparison, studies
from world_models.errors import UserError
from world_models.report import merge
from world_models.training import check_config

STEPS = 150


def fake_run(run_dir, test_mse, ar_mse, ar_ssim=0.9):
    """A finished run's files. Copy-first's MSE rises 0 -> 0.02 over the steps, the mean
    frame's is 0.01 throughout; the rollout's is `ar_mse(step)`. Copy-last's one-step test MSE
    is 1e-3."""
    (run_dir / "evaluate").mkdir(parents=True)
    results = {"test_mse": test_mse, "best_val_mse": test_mse, "fit_seconds": 60.0,
               "train_frames_per_s": 900.0, "baselines": {"copy_last": 1e-3, "mean_frame": 8e-3}}
    curves = {"autoregressive": ar_mse, "copy_last": lambda t: 0.02 * t / STEPS,
              "mean_frame": lambda t: 0.01}
    ssim = {"autoregressive": ar_ssim, "copy_last": 0.5, "mean_frame": 0.8}
    rows = ["step,strategy,metric,mean,std,n"]
    for strategy, curve in curves.items():
        for t in range(1, STEPS + 1):
            mse = curve(t)
            for metric, value in (("mse", mse), ("psnr", -10 * math.log10(mse)),
                                  ("ssim", ssim[strategy]), ("road_iou", 0.5),
                                  ("sharpness", 1.0)):
                rows.append(f"{t},{strategy},{metric},{value},0,2")
    (run_dir / "evaluate" / "rollout_metrics.csv").write_text("\n".join(rows) + "\n")
    summary = {"sequences": 2, "horizon": STEPS, "context": 1, "data": {"dir": "d"}}
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "evaluate" / "summary.json").write_text(json.dumps(summary))
    return comparison.load_run(run_dir)


@pytest.mark.parametrize("name", sorted(p.stem for p in studies.STUDY_DIR.glob("*.yaml")))
def test_every_shipped_study_composes_with_the_real_configs(name):
    study = studies.load_study(name)
    variants = dict(study["variants"])
    if "stage2" in study:  # every stage-2 list on every candidate
        for best in study["stage2"]["candidates"]:
            variants |= compare.stage2(study, best)
    for words in variants.values():
        train_words, _ = compare.variant_words(words)  # rollout.* words go to evaluate.py
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=merge(study["train"], train_words))
        check_config(cfg)  # a valid setting, or a UserError naming the variant's bad key


def test_make_compare_runs_the_drift_study_by_default():
    assert compare.DEFAULT_STUDY == "drift" and "stage2" in studies.load_study("drift")


def test_unknown_study_lists_the_known_ones():
    with pytest.raises(UserError, match="open_loop"):
        studies.load_study("nope")


def test_goals_from_the_runs_files(tmp_path):
    good = fake_run(tmp_path / "good", 1.5e-4, lambda t: 0.5 * min(0.02 * t / STEPS, 0.01))
    # Worse than the mean frame from step 100 on, and one-step 0.3x copy-last.
    late = fake_run(tmp_path / "late", 3e-4, lambda t: 0.011 if t >= 100 else 0.001 * t / STEPS,
                    ar_ssim=0.7)
    ok = studies.verdicts([good])
    assert all(met for met, _ in ok.values()), ok
    bad = studies.verdicts([late])
    goal1, goal2, goal3 = bad.values()
    assert goal1 == (False, "MSE > mean-frame at 51 steps (100-150)")
    assert not goal2[0] and "SSIM < mean-frame at 150 steps (1-150)" in goal2[1]
    assert goal3 == (False, "0.300x")
    path = studies.write("open_loop", studies.load_study("open_loop"),
                         {"good": [good], "late": [late]}, tmp_path / "out",
                         {"root": tmp_path, "walls": {"train good": 60.0}})
    text = path.read_text()
    assert "1. AR MSE <= both baselines: **MET**" in text
    assert "1. AR MSE <= both baselines: **NOT MET** (MSE > mean-frame at 51 steps" in text
    assert (tmp_path / "out" / "figures" / "open_loop_per_step.png").is_file()


def test_goals_of_several_seeds_say_how_many_meet_them_one_by_one(tmp_path):
    """The verdict is the mean's; a seed that misses is named beside it, even where the mean
    over seeds meets the goal."""
    def half(t):  # half the better baseline's MSE
        return 0.5 * min(0.02 * t / STEPS, 0.01)

    good = [fake_run(tmp_path / f"seed{k}", 1.5e-4, half) for k in (0, 1)]
    # Worse than the mean frame (0.01) at steps 140-150 alone; the mean of three is not.
    late = fake_run(tmp_path / "seed2", 1.5e-4, lambda t: 0.0105 if t >= 140 else half(t))
    goal1, goal2, goal3 = studies.verdicts([*good, late]).values()
    assert goal1 == (True, "every step 1-150; seed by seed: 2 of 3, not seed2")
    assert goal2[0] and goal2[1].endswith("seed by seed: 2 of 3, not seed2")
    assert goal3 == (True, "0.150x; seed by seed: 3 of 3")
    assert studies.verdicts([late])["1. AR MSE <= both baselines"][0] is False


def test_a_study_on_the_defaults_says_so_in_words(tmp_path):
    good = fake_run(tmp_path / "good", 1.5e-4, lambda t: 0.005)
    study = {**studies.load_study("fade"), "train": [], "variants": {"plain": [], "x": ["a=1"]}}
    text = studies.write("fade", study, {"plain": [good], "x": [good]}, tmp_path / "out",
                         {"root": tmp_path, "walls": {}}).read_text()
    assert "- Every run: the defaults and its variant's words" in text
    assert "- **plain**: the defaults" in text and "- **x**: `a=1`" in text


def test_the_page_names_each_dataset_its_variants_were_evaluated_on(tmp_path):
    runs = {name: [fake_run(tmp_path / name, 1.5e-4, lambda t: 0.005)] for name in "abc"}
    assert studies.data_dirs(runs) == "`d`"
    runs["c"][0]["summary"]["data"]["dir"] = "mix"
    assert studies.data_dirs(runs) == "`d` (a, b); `mix` (c)"


def test_every_variant_of_a_long_study_has_its_own_line_style():
    from world_models.plots import variant_line
    styles = [tuple(variant_line(i).values()) for i in range(20)]
    assert len(set(styles)) == 20
