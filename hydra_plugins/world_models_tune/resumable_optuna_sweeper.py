"""Hydra's Optuna sweeper, resumable: what conf/hparams_search/ names as hydra.sweeper._target_.

(Hydra takes sweepers only from the hydra_plugins namespace package, hence this file's place.)

The plugin keeps the study in the storage it is given (SQLite in the sweep directory, here),
but a rerun would run n_trials more, number its jobs from 0 again, leave the trials a killed
run had started as RUNNING forever, and, with a seeded sampler, draw the points it drew before.
ResumableOptunaSweeper fixes these before handing over to the plugin, and afterwards writes
the best trial as an experiment (tuning.write_best).
"""

import sys
from pathlib import Path

from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig


class ResumableOptunaSweeper(OptunaSweeper):
    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.config = config

    def sweep(self, arguments: list[str]) -> None:
        # Imported here: Hydra imports every plugin module whenever any app starts.
        import optuna
        from optuna.trial import TrialState

        from world_models.tuning import write_best

        impl, config = self.sweeper, self.config
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not its directory
        study = optuna.create_study(study_name=impl.study_name, storage=impl.storage,
                                    directions=impl._get_directions(), load_if_exists=True)
        # A killed run's trials stay RUNNING: mark them failed, and run them again.
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
            study._storage.set_trial_state(trial._trial_id, TrialState.FAIL)
        trials = study.get_trials(deepcopy=False)
        done = sum(not t.user_attrs.get("interrupted") for t in trials)
        if trials:
            print(f"tune: continuing study '{study.study_name}' ({impl.storage}): {done} of "
                  f"{impl.n_trials} trials done", flush=True)
        impl.n_trials = max(impl.n_trials - done, 0)
        impl.job_idx = len(trials)  # Hydra's job number = the study's trial number
        sampler = config.hydra.sweeper.sampler
        if trials and sampler.get("seed") is not None and "GridSampler" not in sampler._target_:
            # Made anew with the first run's seed, it would draw that run's points again.
            impl.sampler = instantiate(sampler, seed=sampler.seed + len(trials))
        try:
            impl.sweep(arguments)
        except ValueError:  # its closing study.best_trial, if no trial completed
            if completed(optuna, study.study_name, impl.storage):
                raise
        if not completed(optuna, study.study_name, impl.storage):
            print(f"error: tune: none of the trials of study '{study.study_name}' completed; "
                  f"their logs are in {sweep_dir}", file=sys.stderr, flush=True)
            sys.exit(2)
        study = optuna.load_study(study_name=study.study_name, storage=impl.storage)
        write_best(study, sweep_dir, config.get("objective", "val/loss"),
                   set(config.hydra.runtime.choices))


def completed(optuna, study_name: str, storage: str) -> bool:
    study = optuna.load_study(study_name=study_name, storage=storage)
    return any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
