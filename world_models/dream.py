"""make dream: a trained model's dream beside the simulator, from a test episode's first frame.

Scripted (mode=script): the manoeuvres of conf/dream.yaml (and an action file) for N steps,
the model open-loop from the one true frame, the simulator on the same track under the same
actions; written as dream.gif, dream_grid.png and dream.json. Interactive (mode=interactive):
dream_window.py, driven with the arrow keys.
"""

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from world_models import plots
from world_models.data.datamodule import SPLITS, CarRacingDataModule, to_float_frames
from world_models.data.episodes import ACTION_HIGH, ACTION_LOW
from world_models.data.replay import Replay, episode_start
from world_models.errors import UserError
from world_models.evaluation import check_fits, load_model, user_overrides, with_training_data
from world_models.rollout import autoregressive

MODES = ("script", "interactive")


def check_config(cfg: DictConfig) -> None:
    if not cfg.ckpt:
        raise UserError("ckpt: required, e.g. ckpt=outputs/train/<run>/checkpoints/last.ckpt")
    if cfg.mode not in MODES:
        raise UserError(f"mode: expected one of {', '.join(MODES)}, got '{cfg.mode}'")
    if cfg.split not in SPLITS:
        raise UserError(f"split: expected one of {', '.join(SPLITS)}, got '{cfg.split}'")
    if cfg.steps < 1:
        raise UserError(f"steps: expected >= 1, got {cfg.steps}")
    for name, action in (cfg.manoeuvres or {}).items():
        check_actions(np.asarray(action, dtype=np.float32)[None], f"manoeuvres.{name}")


def check_actions(actions: np.ndarray, source: str) -> np.ndarray:
    """Refuse actions that are not [T, 3] within CarRacing's ranges, naming `source`."""
    if actions.ndim != 2 or actions.shape[1] != 3 or len(actions) < 1:
        raise UserError(f"{source}: expected actions [T, 3] (steer, gas, brake), "
                        f"got shape {list(actions.shape)}")
    outside = ~np.isfinite(actions) | (actions < ACTION_LOW) | (actions > ACTION_HIGH)
    if outside.any():
        step, column = np.argwhere(outside)[0]
        raise UserError(f"{source}: action {actions[step].tolist()} at step {step} is outside "
                        f"steer [-1, 1], gas [0, 1], brake [0, 1] (column {column})")
    return actions


def load_actions(path) -> np.ndarray:
    """Actions [T, 3] from a .npy array or a .csv of three numbers a line (a header is fine)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"actions_file: '{path}' does not exist")
    try:
        if path.suffix == ".npy":
            actions = np.load(path, allow_pickle=False)
        elif path.suffix == ".csv":
            try:
                actions = np.loadtxt(path, delimiter=",", ndmin=2)
            except ValueError:  # a header line, e.g. steer,gas,brake
                actions = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)
        else:
            raise UserError(f"actions_file: '{path}' must end in .npy or .csv")
    except (OSError, ValueError) as err:
        raise UserError(f"actions_file: '{path}' is not readable ({err})") from None
    return check_actions(np.asarray(actions, dtype=np.float32), f"actions_file: '{path}'")


def manoeuvres(cfg: DictConfig) -> dict[str, np.ndarray]:
    """name -> actions [T, 3]: each configured manoeuvre held for cfg.steps, the action file."""
    plans = {name: np.tile(np.asarray(action, np.float32), (cfg.steps, 1))
             for name, action in (cfg.manoeuvres or {}).items()}
    if cfg.actions_file:
        plans[Path(cfg.actions_file).stem] = load_actions(cfg.actions_file)
    if not plans:
        raise UserError("manoeuvres: nothing to dream; give manoeuvres or actions_file")
    return plans


def start_episode(cfg: DictConfig):
    """The model and a Replay of the simulator at the chosen episode's start."""
    model = load_model(cfg.ckpt)
    datamodule = CarRacingDataModule.from_config(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    check_fits(model, datamodule, cfg.ckpt)
    episodes = datamodule.episodes[cfg.split]
    if not 0 <= cfg.episode < len(episodes):
        raise UserError(f"episode: expected 0 <= episode < {len(episodes)} (the {cfg.split} "
                        f"episodes of '{datamodule.dir}'), got {cfg.episode}")
    start = episode_start(datamodule.dir / f"{episodes[cfg.episode].name}.npz")
    from world_models.envs import make_env

    return model, Replay(start, make_env(start.env_kind))


def dream_and_drive(model, replay: Replay, actions: np.ndarray):
    """The simulator's frames [T+1, 3, H, W] under `actions` [T, 3] from the start, and the
    model's open-loop predictions of frames 1..T [T, 3, H, W] from the same first frame
    (T shrinks if the simulator's episode ends first)."""
    real = to_float_frames(torch.from_numpy(replay.drive(actions)))  # [T+1, 3, H, W]
    steps = len(real) - 1
    taken = torch.from_numpy(actions[:steps])  # [T, 3]
    dreamed = autoregressive(model, real[None], taken[None], context=1)[0].cpu()  # [T, 3, H, W]
    return real, dreamed.clamp(0.0, 1.0)


def write_pictures(out_dir: Path, results: dict) -> dict:
    """dream.gif (a frame per step: simulator over model, a column per manoeuvre) and
    dream_grid.png (two rows per manoeuvre, a column per grid step)."""
    names = list(results)
    steps = min(len(dreamed) for _, dreamed in results.values())
    pictures = [plots.frame_table([[results[n][0][t + 1] for n in names],
                                   [results[n][1][t] for n in names]],
                                  ["simulator", "model"], [f"{n}, step {t + 1}" for n in names])
                for t in range(steps)]
    plots.save_gif(out_dir / "dream.gif", pictures)
    columns = plots.grid_steps(steps)
    rows, labels = [], []
    for name in names:
        real, dreamed = results[name]
        rows += [[real[s] for s in columns], [dreamed[s - 1] for s in columns]]
        labels += [f"{name}: simulator", f"{name}: model"]
    plots.frame_table(rows, labels, [f"step {s}" for s in columns]).save(
        out_dir / "dream_grid.png")
    return {"gif": str(out_dir / "dream.gif"), "grid": str(out_dir / "dream_grid.png")}


def spread(results: dict, steps=(5, 10, 25, 50)) -> dict:
    """How far the manoeuvres part: the MSE between two manoeuvres' frames at each step, averaged
    over the pairs, for the simulator and for the model. A model that follows its actions parts
    them as the simulator does; one that ignores them shows one film (model spread near 0)."""
    names = list(results)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    horizon = min(len(dreamed) for _, dreamed in results.values())
    table = {}
    for step in (s for s in steps if s <= horizon and pairs):
        real = sum(float(((results[a][0][step] - results[b][0][step]) ** 2).mean())
                   for a, b in pairs) / len(pairs)
        model = sum(float(((results[a][1][step - 1] - results[b][1][step - 1]) ** 2).mean())
                    for a, b in pairs) / len(pairs)
        table[f"step_{step}"] = {"simulator": real, "model": model}
    return table


def format_spread(table: dict) -> str:
    if not table:
        return "manoeuvre spread: needs two manoeuvres"
    # .2g: an untrained model's manoeuvres barely part (0.0012x), a trained one's near 1x
    parts = ", ".join(f"step {k[5:]} {v['model'] / max(v['simulator'], 1e-12):.2g}x"
                      for k, v in table.items())
    return f"how far the model's manoeuvres part, against the simulator's: {parts}"


def dream_script(cfg: DictConfig, model, replay: Replay, out_dir: Path) -> dict:
    results, summary = {}, {}
    for name, actions in manoeuvres(cfg).items():
        real, dreamed = dream_and_drive(model, replay, actions)
        results[name] = (real, dreamed)
        mse = ((dreamed - real[1:]) ** 2).mean(dim=(1, 2, 3))  # [T]
        summary[name] = {"steps": len(dreamed), "mse_mean": float(mse.mean()),
                         "mse_last": float(mse[-1]), "action_first": actions[0].tolist()}
    files = write_pictures(out_dir, results)
    report = {"ckpt": str(cfg.ckpt), "episode": replay.start.name, "manoeuvres": summary,
              "spread": spread(results), **files}
    (out_dir / "dream.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, s in summary.items():
        print(f"{name:>10}: {s['steps']} steps, model vs simulator MSE {s['mse_mean']:.4f} "
              f"(last step {s['mse_last']:.4f})")
    print(format_spread(report["spread"]))
    print(f"dream of {replay.start.name}: {files['gif']}  {files['grid']}")
    return report


def dream(cfg: DictConfig, video_driver: str | None = None) -> dict | None:
    """Run make dream as `cfg` says; `video_driver` is SDL_VIDEODRIVER as the user had it."""
    check_config(cfg)
    cfg = with_training_data(cfg, user_overrides())
    model, replay = start_episode(cfg)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "script":
        return dream_script(cfg, model, replay, out_dir)
    from world_models.dream_window import open_window, run_window

    screen = open_window(model.frame_shape, cfg.window.scale, video_driver, cfg.window.max_frames)
    run_window(screen, model, replay, cfg.window.scale, cfg.window.fps, cfg.window.max_frames)
    return None
