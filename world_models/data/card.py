"""The dataset card, <data.dir>/card.json: the settings a dataset was collected with, and a
summary of it (size, and how much moves between frames).

A collection writes the settings before its first episode, so a directory it started is
always recognised, and adds the summary when it ends. A directory of episodes without a card
was made elsewhere (converted, copied in) and is read as it is.
"""

import json
from pathlib import Path

import numpy as np

from world_models.data.episodes import episode_files, read_episode, remove_quietly
from world_models.errors import UserError

CARD = "card.json"
# The card's settings and the keys that set them. collect.env is not among them: the fast
# and the stock simulator write the same bytes.
SETTING_KEYS = {"episode_steps": "data.episode_steps", "skip_frames": "data.skip_frames",
                "resolution": "data.resolution", "seed": "data.seed", "policy": "policy"}


def read_card(directory) -> dict | None:
    path = Path(directory) / CARD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable dataset card ({err}); delete it to collect "
                        f"again or choose another data.dir") from None


def write_card(directory, card: dict) -> dict:
    path = Path(directory) / CARD
    try:
        path.write_text(json.dumps(card, indent=2) + "\n")
    except OSError as err:
        remove_quietly(path)
        raise UserError(f"{path}: cannot write ({err.strerror or err}); the episodes are "
                        f"kept") from None
    return card


def _differences(have, want, key: str):
    """(key, card's value, requested value) for each setting that differs, nested keys named;
    a policy's name first, the difference a user reads most easily."""
    if isinstance(have, dict) and isinstance(want, dict):
        for name in sorted(set(have) | set(want), key=lambda n: (n != "name", n)):
            yield from _differences(have.get(name), want.get(name), f"{key}.{name}")
    elif have != want:
        yield key, have, want


def check_request(directory, settings: dict, num_episodes: int) -> None:
    """Refuse a request that the dataset in `directory` cannot meet by adding episodes.

    More episodes with the same settings can be collected; other settings, or fewer
    episodes than it holds, would give a dataset that is not the one asked for.
    """
    card = read_card(directory)
    if card is None:
        return
    for field, key in SETTING_KEYS.items():
        for name, have, want in _differences(card.get(field), settings.get(field), key):
            raise UserError(
                f"{name}: '{directory}' was collected with {name}={json.dumps(have)} but this "
                f"command asks for {json.dumps(want)}; set it back or choose another data.dir"
            )
    held = len(episode_files(directory))
    if held > num_episodes:
        raise UserError(
            f"data.num_episodes: '{directory}' holds {held} episodes but this command asks for "
            f"{num_episodes}; set data.num_episodes={held} or choose another data.dir"
        )


def dataset_card(directory, **settings) -> dict:
    """Summarise a dataset: size and how much moves between frames; store it as card.json."""
    episodes = [read_episode(f) for f in episode_files(directory)]
    sq_err, unchanged, steps = 0.0, 0, 0
    for ep in episodes:
        frames = ep.frames.astype(np.float32) / 255.0
        diff = frames[1:] - frames[:-1]  # [T, H, W, 3]
        sq_err += float((diff**2).mean(axis=(1, 2, 3)).sum())
        unchanged += int((np.abs(diff).reshape(len(diff), -1).max(axis=1) == 0).sum())
        steps += ep.steps
    return write_card(directory, {
        "episodes": len(episodes),
        "steps": steps,
        "mean_episode_steps": steps / max(len(episodes), 1),
        "copy_last_frame_mse": sq_err / max(steps, 1),
        "unchanged_fraction": unchanged / max(steps, 1),
        **settings,
    })


def format_card(card: dict) -> str:
    return (
        f"dataset: {card['episodes']} episodes, {card['steps']} steps "
        f"({card['mean_episode_steps']:.0f} per episode); copy-last-frame MSE "
        f"{card['copy_last_frame_mse']:.3g}; frame unchanged on "
        f"{100 * card['unchanged_fraction']:.1f}% of steps"
    )
