"""Train a world model: `python train.py [key=value ...]` (make train)."""

import os

import hydra

from world_models.errors import exit_on_user_error

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg) -> None:
    from world_models.training import train

    train(cfg)


if __name__ == "__main__":
    main()
