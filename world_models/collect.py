"""`python -m world_models.collect`: record CarRacing episodes into data.dir."""

import os

import hydra

from world_models.errors import exit_on_user_error, run_hydra_app

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@hydra.main(version_base="1.3", config_path="../conf", config_name="collect")
@exit_on_user_error
def main(cfg) -> None:
    from world_models.data.collection import collect_from_config

    collect_from_config(cfg)


if __name__ == "__main__":
    run_hydra_app(main)
