"""Env throughput: stock CarRacing-v3 vs the byte-identical FastCarRacing, 1 vs 2 workers.

`python benchmarks/bench_env.py` steps each env kind in this one process with the
same seeded action sequence (after one reset, not timed) and prints steps/s
side by side with the speedup; then it collects the same episodes with 1 and
with 2 worker processes (start-up included) and prints both rates.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from world_models.data.collection import collect  # noqa: E402
from world_models.data.policies import scripted_drive  # noqa: E402
from world_models.data.recording import CollectSpec  # noqa: E402
from world_models.envs import make_env  # noqa: E402


def bench_env(kind: str, steps: int = 400, seed: int = 0) -> float:
    """Env steps per second for `make_env(kind)`; resets (untimed) when an episode ends."""
    env = make_env(kind)
    try:
        env.reset(seed=seed)
        actions = scripted_drive(steps, seed)
        elapsed = 0.0
        for action in actions:
            t0 = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            elapsed += time.perf_counter() - t0
            if terminated or truncated:
                env.reset()
        return steps / elapsed
    finally:
        env.close()


def bench_workers(workers: int, episodes: int = 8, steps: int = 300) -> float:
    """Env steps per second of a real collection (fast env), process start-up included."""
    with tempfile.TemporaryDirectory() as directory:
        spec = CollectSpec(dir=directory, episode_steps=steps)
        stats = collect(spec, episodes, workers=workers, progress=False)
    return stats["env_steps"] / stats["seconds"]


def main(steps: int = 400, seed: int = 0) -> dict[str, float]:
    rates = {kind: bench_env(kind, steps, seed) for kind in ("stock", "fast")}
    print(f"env steps/s over {steps} steps (seed {seed}, one process)")
    print(f"  stock: {rates['stock']:8.1f}")
    print(f"  fast:  {rates['fast']:8.1f}")
    print(f"  speedup: {rates['fast'] / rates['stock']:.2f}x")
    for workers in (1, 2):
        rates[f"workers={workers}"] = bench_workers(workers)
    print(f"collection env steps/s (fast env, 8 episodes x 350 steps, {os.cpu_count()} cores)")
    print(f"  1 worker:  {rates['workers=1']:8.1f}")
    print(f"  2 workers: {rates['workers=2']:8.1f}")
    print(f"  scaling: {rates['workers=2'] / rates['workers=1']:.2f}x")
    return rates


if __name__ == "__main__":
    main()
