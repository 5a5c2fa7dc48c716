"""Train a world model: `python train.py [key=value ...]` (make train)."""

import os
import sys

import hydra

from world_models.errors import exit_on_user_error, run_hydra_app, sweeper_records_failures

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg) -> float | None:
    from world_models.settings import check_types

    check_types(cfg)  # a mistyped number is refused before torch and Lightning are imported
    from world_models.training import train
    from world_models.tuning import check_objective, objective_value

    check_objective(cfg.objective)
    results = train(cfg)
    # What a sweeper (make tune) minimises; in its trials a missing value fails the trial.
    return objective_value(results, cfg.objective, required=sweeper_records_failures())


@exit_on_user_error
def check_run_dir(words: list[str]) -> None:
    from world_models.runs import check_run_dir_word

    check_run_dir_word(words)  # before Hydra writes this run's config into the directory


if __name__ == "__main__":
    check_run_dir(sys.argv[1:])
    run_hydra_app(main)
