"""Drive a trained world model beside the simulator: `python dream.py ckpt=PATH` (make dream)."""

import os

import hydra

from world_models.errors import exit_on_user_error, run_hydra_app

# The simulator's module sets SDL_VIDEODRIVER=dummy when it is unset, for headless collection;
# the interactive window needs what the user had, so read it before anything imports it.
USER_VIDEO_DRIVER = os.environ.get("SDL_VIDEODRIVER")


@hydra.main(version_base="1.3", config_path="conf", config_name="dream")
@exit_on_user_error
def main(cfg) -> None:
    from world_models.dream import dream

    dream(cfg, video_driver=USER_VIDEO_DRIVER)


if __name__ == "__main__":
    run_hydra_app(main)
