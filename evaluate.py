"""Roll a checkpoint out: `python evaluate.py ckpt=PATH [key=value ...]` (make evaluate)."""

import hydra

from world_models.errors import exit_on_user_error, run_hydra_app


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
@exit_on_user_error
def main(cfg) -> None:
    from world_models.evaluation import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    run_hydra_app(main)
