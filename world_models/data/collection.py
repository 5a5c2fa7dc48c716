"""Record a dataset of CarRacing episodes, in parallel and resumably.

Each worker records whole episodes (data/recording.py); episode i draws every random number
from (seed, i) alone, so the bytes written do not depend on how many workers ran, in which
order, or on which machine a shard was collected: shards merge by copying files into one
directory.
"""

import multiprocessing as mp
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from world_models.data import claims
from world_models.data.card import check_request, dataset_card, format_card, read_card, write_card
from world_models.data.episodes import episode_files, make_directory, read_episode, write_episode
from world_models.data.policies import make_policy
from world_models.data.recording import OBS_SIZE, CollectSpec, record_episode
from world_models.errors import Interrupted, UserError


def episode_path(directory, index: int) -> Path:
    return Path(directory) / f"episode_{index:05d}.npz"


_worker_env = None


def _init_worker(env_kind: str) -> None:
    global _worker_env
    from world_models.envs import make_env

    _worker_env = make_env(env_kind)


def _collect_one(args) -> tuple[int, int | None]:
    """Record episode `index` unless another collector has it; (index, env steps or None)."""
    spec, index = args
    path = episode_path(spec.dir, index)
    if path.exists() or not claims.claim(spec.dir, index):
        return index, None
    try:
        if path.exists():  # finished by another collector between our two looks
            return index, None
        episode = record_episode(_worker_env, spec, index)
        env_steps = episode.pop("env_steps")
        write_episode(path, **episode, seed=np.array([spec.seed, index]))
    finally:
        claims.release(spec.dir, index)
    return index, env_steps


def check_spec(spec: CollectSpec) -> None:
    if spec.resolution <= 0 or OBS_SIZE % spec.resolution:
        raise UserError(
            f"data.resolution: expected a divisor of {OBS_SIZE} (e.g. 32, 48, 96), "
            f"got {spec.resolution}"
        )
    if spec.episode_steps < 1:
        raise UserError(f"data.episode_steps: expected >= 1, got {spec.episode_steps}")
    if spec.skip_frames < 0:
        raise UserError(f"data.skip_frames: expected >= 0, got {spec.skip_frames}")
    if spec.env not in ("fast", "stock"):
        raise UserError(f"collect.env: expected one of 'fast', 'stock', got '{spec.env}'")
    make_policy(spec.policy, np.random.default_rng(0))  # fail early on a bad policy


def collect(
    spec: CollectSpec,
    num_episodes: int,
    workers: int | None = None,
    shard: int = 0,
    num_shards: int = 1,
    progress: bool = True,
) -> dict:
    """Record the missing episodes of `spec.dir` that belong to this shard.

    Finished episodes are skipped, so running again after an interruption
    completes the dataset. Returns {'recorded', 'skipped', 'env_steps', 'seconds'}.
    """
    workers = check_collect(spec, num_episodes, workers, shard, num_shards)
    directory = prepare_directory(spec, num_episodes)
    mine = [i for i in range(num_episodes) if i % num_shards == shard]
    todo = [i for i in mine if not episode_path(directory, i).exists()]
    start, done, interrupted = time.perf_counter(), {"recorded": 0, "env_steps": 0}, False
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="episode",
               desc=f"collect {directory}", disable=not progress)
    # a complete dataset (a training run's every start) needs no simulator
    pool = start_workers(spec.env, min(workers, max(len(todo), 1)), needed=bool(todo))
    try:
        record(spec, directory, mine, todo, pool, bar, done)
    except UserError as err:  # a write failed (full disk, read-only directory)
        raise UserError(f"{err}; the finished episodes in '{directory}' are kept: fix that "
                        f"and run the same command again to collect the rest") from None
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        claims.remove_stale(directory)  # of workers stopped mid-episode
    if interrupted:
        kept = sum(episode_path(directory, i).exists() for i in mine)
        raise Interrupted(f"{kept} of {len(mine)} episodes are kept in '{directory}'; run the "
                          f"same command again to collect the other {len(mine) - kept}")
    skipped = len(mine) - len(todo)
    return {**done, "skipped": skipped, "by_others": len(mine) - skipped - done["recorded"],
            "seconds": time.perf_counter() - start}


def check_collect(spec: CollectSpec, num_episodes: int, workers: int | None, shard: int,
                  num_shards: int) -> int:
    """Refuse impossible settings, naming the key; the number of workers to start."""
    check_spec(spec)
    if num_episodes < 1:
        raise UserError(f"data.num_episodes: expected >= 1, got {num_episodes}")
    if not 0 <= shard < num_shards:
        raise UserError(f"collect.shard: expected 0 <= shard < num_shards={num_shards}, "
                        f"got {shard}")
    workers = workers or len(os.sched_getaffinity(0))
    if workers < 1:
        raise UserError(f"collect.workers: expected >= 1, got {workers}")
    return workers


def prepare_directory(spec: CollectSpec, num_episodes: int) -> Path:
    """data.dir, made if missing and checked against what it already holds."""
    directory = make_directory(spec.dir, "data.dir")
    settings = card_settings(spec)
    check_request(directory, settings, num_episodes)
    _check_existing_resolution(directory, spec.resolution)
    claims.remove_stale(directory)
    if read_card(directory) is None and not episode_files(directory):
        write_card(directory, settings)  # before the first episode: the directory is ours
    return directory


def start_workers(env: str, workers: int, needed: bool):
    """A pool of `workers` simulator processes, or None to record in this process."""
    if workers == 1:
        if needed:
            _init_worker(env)
        return None
    # spawn, not fork: the parent may hold torch threads or a pygame display. The workers
    # start with Ctrl-C ignored (Python keeps an inherited SIG_IGN), so only this process
    # handles it: one message, not a traceback from every worker.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return mp.get_context("spawn").Pool(workers, _init_worker, (env,))
    finally:
        signal.signal(signal.SIGINT, previous)


def record(spec: CollectSpec, directory: Path, mine: list[int], todo: list[int], pool, bar,
           done: dict) -> None:
    """Record `todo` until every episode of `mine` is on disk, waiting for the ones other
    collectors claimed; counts go to `done` as they finish."""
    start, waiting_said = time.perf_counter(), False
    while todo:
        tasks = [(spec, i) for i in todo]
        results = map(_collect_one, tasks) if pool is None else pool.imap_unordered(
            _collect_one, tasks)
        for _, steps in results:
            if steps is None:  # another collector has it
                continue
            done["recorded"] += 1
            done["env_steps"] += steps
            bar.update(1)
            bar.set_postfix(steps_per_s=f"{done['env_steps'] / (time.perf_counter() - start):.0f}")
        missing = [i for i in mine if not episode_path(directory, i).exists()]
        todo = [i for i in missing if not claims.held(directory, i)]
        if missing and not todo:  # all left are being recorded by other collectors
            if not waiting_said:
                tqdm.write(f"waiting for {len(missing)} episodes that other collectors "
                           f"claimed, e.g. {claims.claim_path(directory, missing[0])}")
                waiting_said = True
            time.sleep(0.5)
            todo = [i for i in missing if not episode_path(directory, i).exists()]


def _check_existing_resolution(directory: Path, resolution: int) -> None:
    """Refuse to mix resolutions in one directory, which would make it unreadable."""
    files = episode_files(directory)
    if files:
        shape = read_episode(files[0]).frames.shape[1:3]
        if shape != (resolution, resolution):
            raise UserError(
                f"data.dir: '{directory}' holds {shape[0]}x{shape[1]} episodes but "
                f"data.resolution={resolution}; choose another data.dir"
            )


def card_settings(spec: CollectSpec) -> dict:
    """The settings a dataset card records: all of the spec but where it was written."""
    return {k: v for k, v in asdict(spec).items() if k != "dir"}


def spec_from_config(cfg) -> CollectSpec:
    """Build a CollectSpec from the composed Hydra config (data, policy, collect, seed)."""
    from omegaconf import OmegaConf

    return CollectSpec(dir=str(cfg.data.dir), episode_steps=int(cfg.data.episode_steps),
                       skip_frames=int(cfg.data.skip_frames), resolution=int(cfg.data.resolution),
                       policy=OmegaConf.to_container(cfg.policy, resolve=True),
                       env=str(cfg.collect.env), seed=int(cfg.data.seed))


def collect_from_config(cfg, progress: bool = True) -> dict:
    """Collect what `cfg` asks for, print and store the dataset card; return the card."""
    from world_models.settings import check_types

    check_types(cfg)
    spec = spec_from_config(cfg)
    stats = collect(spec, int(cfg.data.num_episodes), cfg.collect.workers,
                    int(cfg.collect.shard), int(cfg.collect.num_shards), progress)
    card = read_card(spec.dir)
    if stats["recorded"] or not card or card.get("episodes") != len(episode_files(spec.dir)):
        card = dataset_card(spec.dir, **card_settings(spec))
    rate = stats["env_steps"] / stats["seconds"] if stats["seconds"] else 0.0
    print(
        f"collected {stats['recorded']} episodes ({stats['skipped']} already there"
        + (f", {stats['by_others']} by other collectors" if stats["by_others"] else "")
        + f") in "
        f"{stats['seconds']:.1f}s, {rate:.0f} env steps/s, into {spec.dir}"
    )
    print(format_card(card))
    return card
