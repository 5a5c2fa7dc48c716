"""make tune: the number a trial returns to the sweeper, and the best trial as an experiment.

The search spaces are recipes in conf/hparams_search/; the sweeper is
hydra_plugins/world_models_tune/resumable_optuna_sweeper.py.
"""

import math
from pathlib import Path

from omegaconf import OmegaConf

from world_models.errors import UserError

# objective -> the keys of train()'s results that hold it, the first that is set wins (the
# tested epoch's val/loss: the best by it, or the last when checkpoint_monitor is null)
OBJECTIVES = {"val/loss": ("best_val_mse", "last_val_mse"),
              "val/rollout_mse_ar": ("val_rollout_mse_ar",)}
# Never part of the best trial's overrides: they would start another search.
NOT_REPEATED = ("hparams_search", "hydra")


def check_objective(name: str) -> None:
    if name not in OBJECTIVES:
        raise UserError(f"objective: expected one of {', '.join(OBJECTIVES)}, got '{name}'")


def objective_value(results: dict, name: str, required: bool = False) -> float | None:
    """The number a sweeper minimises: the tested epoch's val/loss or the last rollout's MSE.

    None when the run has none (e.g. debug=fast validates no epoch); `required` (a trial of
    make tune) makes that a UserError, so the trial is recorded as failed with the reason.
    """
    # {}: a DDP rank other than 0
    value = next((results[k] for k in OBJECTIVES[name] if (results or {}).get(k) is not None),
                 None)
    if required and (value is None or not math.isfinite(value)):
        hint = ("the rollout callback never ran: callbacks.rollout.every_n_epochs"
                if name == "val/rollout_mse_ar" else "no epoch was validated")
        raise UserError(f"objective: this run has no finite {name}, got {value} ({hint})")
    return value


def best_experiment(overrides: dict[str, str], groups) -> dict:
    """An experiment config (conf/experiment/ format) that applies the `key=value` overrides:
    group choices (data=tiny) become defaults overrides, the rest nested values."""
    chosen = {k: v for k, v in overrides.items() if k in groups}
    values = OmegaConf.from_dotlist([f"{k}={v}" for k, v in overrides.items() if k not in groups])
    experiment = {"defaults": [{f"override /{k}": v} for k, v in chosen.items()]} if chosen else {}
    return {**experiment, **OmegaConf.to_container(values)}


def repeated_overrides(trial) -> dict[str, str]:
    """The `key=value` words that make a trial's run: its sampled params and the fixed ones."""
    words = {**trial.user_attrs, **{k: str(v) for k, v in trial.params.items()}}
    return {k: str(v) for k, v in words.items()
            if k != "interrupted" and k.split(".")[0].split("/")[0] not in NOT_REPEATED}


def write_best(study, sweep_dir: Path, objective: str, groups) -> Path:
    """<sweep_dir>/experiment/best.yaml: the best trial as an experiment; print how to use it."""
    best = study.best_trial
    overrides = repeated_overrides(best)
    path = sweep_dir / "experiment" / "best.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    words = " ".join(f"{k}={v}" for k, v in overrides.items())
    header = (f"# @package _global_\n"
              f"# Trial {best.number} of study '{study.study_name}' ({sweep_dir}): "
              f"{objective} {best.value:.6g}, the best of {len(study.trials)} trials.\n"
              f"# make train experiment=best 'hydra.searchpath=[file://{sweep_dir.resolve()}]'\n"
              f"# or: make train {words}\n")
    body = OmegaConf.to_yaml(OmegaConf.create(best_experiment(overrides, groups)))
    path.write_text(header + body)
    counts = {s: sum(t.state.name == s for t in study.trials) for s in ("COMPLETE", "FAIL")}
    print(f"tune: {counts['COMPLETE']} trials complete, {counts['FAIL']} failed; best: trial "
          f"{best.number}, {objective} {best.value:.6g}\n"
          f"  make train {words}\n"
          f"  or: make train experiment=best 'hydra.searchpath=[file://{sweep_dir.resolve()}]'"
          f"  ({path})", flush=True)
    return path
