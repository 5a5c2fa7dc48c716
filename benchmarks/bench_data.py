"""The data path: the DataLoader against a raw gather, DDP memory, a dataset above a memory cap.

`python benchmarks/bench_data.py` writes synthetic episodes (32x32 frames, the default
dataset's 120 x 600 steps unless told otherwise) to a temporary directory and measures

  (a) windows/s of the training DataLoader (51-frame windows every 10 steps, batch 16 and 64,
      uint8 from the memory-mapped cache) against raw gathers of the same windows, batch by
      batch, from a uint8 tensor in memory (an index_select, or a slice per window and a
      stack, each from its own copy), in this thread's CPU time, as a ratio to the faster;
  (b) resident (RSS) and proportional (PSS, /proc/<pid>/smaps_rollup) memory of a short
      `train.py` run with 1 process and with 2 DDP processes (`trainer=ddp`, gloo), summed over
      the processes and sampled every 0.2 s (peaks). The data's share: the PSS of the cache's
      maps (/proc/<pid>/smaps) with data.cache=true; with data.cache=false the total PSS minus
      the cached run's non-data PSS. The ratio is 2 processes / 1 process;
  (c) whether a dataset 3x larger than a memory cap trains: `train.py` under
      `prlimit --data=CAP` (RLIMIT_DATA: the heap and every private writable map, so a
      process cannot hold more than CAP of its own), with the cache and with data.cache=false.
      The cache's maps are read-only and file-backed: the page cache holds them, the kernel
      drops and rereads their pages under memory pressure, and they do not count against CAP.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from world_models.data.cache import CACHE_DIR  # noqa: E402
from world_models.data.datamodule import CarRacingDataModule  # noqa: E402
from world_models.data.episodes import write_episode  # noqa: E402

SIZE, SEQ_LEN, STRIDE, BATCH = 32, 51, 10, 16  # the default data.train_* and batch_size
MB = 2**20


def write_dataset(directory: Path, episodes: int, steps: int) -> int:
    """Synthetic episodes: a random frame rolled by one column a step (deflate finds the repeats,
    so writing is fast); returns the frames' bytes."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(episodes):
        base = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        frames = np.stack([np.roll(base, t, axis=1) for t in range(steps + 1)])
        actions = np.zeros((steps, 3), np.float32)
        write_episode(directory / f"episode_{i:05d}.npz", frames, actions, np.zeros(steps))
    return episodes * (steps + 1) * SIZE * SIZE * 3


def loader_vs_gather(directory: Path, batch: int, rounds: int = 3) -> None:
    dm = CarRacingDataModule(str(directory), seq_len=10, train_seq_len=SEQ_LEN,
                             train_stride=STRIDE, batch_size=batch, collect=False)
    dm.prepare_data()
    dm.setup("fit")
    dataset = dm.datasets["train"]
    loader = dm.train_dataloader()
    order = torch.tensor(list(loader.sampler)).split(batch)  # the loader's batches
    # The raw gathers' sources: every training frame and action in one in-memory tensor each,
    # and each window's first row in them. Each gather has its own copy: one that read the
    # windows just before another would leave them in the CPU's cache for it.
    flat = {"frames": torch.cat([f.clone() for f in dataset.frames]),  # [N, H, W, 3] uint8
            "actions": torch.cat([a.clone() for a in dataset.actions])}  # [N', 3]
    copy = {key: source.clone() for key, source in flat.items()}
    starts = {}
    for key in flat:
        lengths = [len(x) for x in getattr(dataset, key)]
        offsets = np.cumsum([0, *lengths])[:-1]
        starts[key] = torch.tensor([offsets[e] + s for e, s in dataset.index])  # [W]
    steps = torch.arange(SEQ_LEN)

    def index_select(ids):  # one index_select per key
        for key, source in flat.items():
            rows = (starts[key][ids, None] + steps).flatten()  # [B * L]
            source.index_select(0, rows).view(len(ids), SEQ_LEN, *source.shape[1:])

    def slice_stack(ids):  # a slice per window, one stack per key
        for key, source in copy.items():
            torch.stack([source[s : s + SEQ_LEN] for s in starts[key][ids].tolist()])

    # Batch by batch, the loader's next batch and the raw gathers of the same windows, timed
    # one after another in a rotating order, in this thread's CPU time: other processes on the
    # cores do not count (a wall clock under load charges a long batch more preemptions).
    times = {"DataLoader (cache)": [], "index_select": [], "slice+stack": []}
    for _ in range(rounds):
        batches = iter(loader)
        measures = [("DataLoader (cache)", lambda ids, batches=batches: next(batches)),
                    ("index_select", index_select), ("slice+stack", slice_stack)]
        for i, ids in enumerate(order):
            for name, fetch in measures[i % 3 :] + measures[: i % 3]:
                started = time.thread_time()
                fetch(ids)
                times[name].append(time.thread_time() - started)
    rates = {name: batch / statistics.median(t) for name, t in times.items()}
    loader_rate = rates.pop("DataLoader (cache)")
    gathers = ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
    print(f"(a) windows/s of {SEQ_LEN} frames + actions, batch {batch}, {len(dataset)} windows "
          f"an epoch x {rounds}, from median CPU times a batch: DataLoader (cache) "
          f"{loader_rate:,.0f}; "
          f"raw gathers from memory: {gathers}; loader / best gather "
          f"**{loader_rate / max(rates.values()):.2f}x**")


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (the DDP launcher starts rank 1 as a child)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def memory(pid: int) -> dict[str, int]:
    """RSS and PSS (smaps_rollup) and the PSS of the cache's maps (smaps) of one process, kB."""
    out = {"rss": 0, "pss": 0, "data_pss": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss"):
                out[key.lower()] = int(rest.split()[0])
        in_cache = False
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            if "-" in line.split(" ", 1)[0]:  # a mapping's header line
                in_cache = f"/{CACHE_DIR}/" in line
            elif in_cache and line.startswith("Pss:"):
                out["data_pss"] += int(line.split()[1])
    except (OSError, ValueError):
        pass
    return out


def train_command(directory: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "train.py", f"data.dir={directory}", "data.collect=false",
            "model=builtin", "model.hidden_size=32", "trainer.max_epochs=1",
            "+trainer.limit_train_batches=20", "+trainer.limit_val_batches=5",
            "~callbacks.rollout", "logger=csv", "checkpoint_monitor=null",
            f"data.train_seq_len={SEQ_LEN}", f"data.train_stride={SEQ_LEN}",
            f"hydra.run.dir={run_dir}", *overrides]


def peak_memory(command: list[str], log: Path) -> dict[str, float]:
    """Run `command`, sampling its process tree; the peaks of the summed RSS, PSS, data PSS."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        peaks = {"rss": 0, "pss": 0, "data_pss": 0}
        while proc.poll() is None:
            totals = [memory(pid) for pid in tree(proc.pid)]
            for key in peaks:
                peaks[key] = max(peaks[key], sum(t[key] for t in totals))
            time.sleep(0.2)
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    return {key: value / 1024 for key, value in peaks.items()}  # MB


def ddp_memory(directory: Path, work: Path) -> None:
    runs = {}
    for cache in ("true", "false"):
        for trainer in ("cpu", "ddp"):
            name = f"{trainer}-cache-{cache}"
            runs[name] = peak_memory(train_command(directory, work / name, f"trainer={trainer}",
                                                   f"data.cache={cache}"), work / f"{name}.log")
    for cache in ("true", "false"):
        data = {}
        for trainer in ("cpu", "ddp"):
            run, cached = runs[f"{trainer}-cache-{cache}"], runs[f"{trainer}-cache-true"]
            # in memory: what the run holds beyond the cached run's non-data memory
            data[trainer] = run["data_pss"] if cache == "true" else (
                run["pss"] - (cached["pss"] - cached["data_pss"]))
            print(f"(b) data.cache={cache:5} {trainer}: RSS {run['rss']:,.0f} MB, "
                  f"PSS {run['pss']:,.0f} MB, data PSS {data[trainer]:,.0f} MB")
        print(f"(b) data.cache={cache}: 2 DDP processes / 1 process: data PSS "
              f"**{data['ddp'] / data['cpu']:.2f}x**, total PSS "
              f"{runs[f'ddp-cache-{cache}']['pss'] / runs[f'cpu-cache-{cache}']['pss']:.2f}x")


def above_the_cap(work: Path, cap_mb: int) -> None:
    directory = work / "large"
    steps = 600
    episodes = int(np.ceil(3 * cap_mb * MB / ((steps + 1) * SIZE * SIZE * 3)))
    size = write_dataset(directory, episodes, steps)
    for cache in ("true", "false"):
        command = ["prlimit", f"--data={cap_mb * MB}", *train_command(
            directory, work / f"large-{cache}", "trainer=cpu", f"data.cache={cache}")]
        log = work / f"large-{cache}.log"
        started = time.perf_counter()
        try:
            peak = peak_memory(command, log)
            verdict = (f"**trains** ({time.perf_counter() - started:.0f} s, peak RSS "
                       f"{peak['rss']:,.0f} MB, PSS {peak['pss']:,.0f} MB)")
        except SystemExit:
            lines = log.read_text().splitlines()
            errors = [line for line in lines if "Error" in line or "error:" in line] or ["?"]
            verdict = f"**fails**: {errors[-1].strip()[:120]}"
        print(f"(c) {size / MB:,.0f} MB of frames ({size / MB / cap_mb:.1f}x) under a "
              f"{cap_mb} MB RLIMIT_DATA cap, data.cache={cache}: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=120)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--cap-mb", type=int, default=768, help="(c)'s RLIMIT_DATA cap")
    parser.add_argument("--skip", default="", help="parts to skip, e.g. bc")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"bench_data: {os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        work = Path(tmp)
        size = write_dataset(work / "data", args.episodes, args.steps)
        print(f"dataset: {args.episodes} episodes x {args.steps} steps, {size / MB:,.0f} MB of "
              f"frames")
        for batch in () if "a" in args.skip else (BATCH, 4 * BATCH):
            loader_vs_gather(work / "data", batch)
        if "b" not in args.skip:
            ddp_memory(work / "data", work)
        if "c" not in args.skip:
            above_the_cap(work, args.cap_mb)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
