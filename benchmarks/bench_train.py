"""Training throughput: builtin vs scratch LSTM core, and Lightning's loop vs a plain loop.

`python benchmarks/bench_train.py` trains the WorldModel at the course report's sizes
(32x32 frames, hidden 128, batch 16, seq_len 10, Adam 3e-4) on seeded random batches held in
memory, so only the model and the training loop are timed (no disk, no decoding). It answers:

  (a) is the from-the-equations ScratchLSTM fast enough next to the fused nn.LSTM (target: a
      scratch/builtin frames/s ratio >= 0.9), both trained with the same plain PyTorch loop;
  (b) what the Lightning loop (hooks, self.log, the DataLoader) costs over a plain loop on the
      same builtin model and batches.

Throughput is predicted frames per second: batch * (seq_len - 1) per optimizer step. The
machine is shared and noisy (other jobs come and go), so every step is timed on its own and a
measurement's frames/s comes from its median step time, which shrugs off short bursts of
load (sustained load still skews everything: the load average is printed to judge by). A
plain step is zero_grad + forward + loss + backward + Adam step; a Lightning step is the time
between consecutive on_train_batch_end hooks (so it includes the DataLoader fetch, the hooks,
self.log and Lightning's optimizer closure) and the one-time Trainer/fit setup is left out.
After a warm-up, the three measurements are interleaved for a few rounds (rotating which goes
first) so that load drifts hit all three alike; the medians over rounds are printed and
compared.
"""

import itertools
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from world_models.models.world_model import WorldModel  # noqa: E402

SIZE, HIDDEN, BATCH, SEQ_LEN, LR = 32, 128, 16, 10, 3e-4
FRAMES_PER_STEP = BATCH * (SEQ_LEN - 1)


def make_batches(count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """`count` random batches: frames [B, L, 3, H, W] in [0, 1], actions [B, L, 3]."""
    g = torch.Generator().manual_seed(seed)
    return [{"frames": torch.rand(BATCH, SEQ_LEN, 3, SIZE, SIZE, generator=g),
             "actions": torch.rand(BATCH, SEQ_LEN, 3, generator=g) * 2 - 1}
            for _ in range(count)]


def make_model(core: str, seed: int) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(core=core, hidden_size=HIDDEN, lr=LR, frame_shape=(3, SIZE, SIZE))


def plain_rate(model: WorldModel, optimizer: torch.optim.Optimizer, batches) -> float:
    """Frames/s of a plain loop: forward + mse (window_loss), backward, Adam step."""
    model.train()
    stamps = [time.perf_counter()]
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        model.window_loss(batch).backward()
        optimizer.step()
        stamps.append(time.perf_counter())
    return rate(stamps)


def rate(stamps: list[float]) -> float:
    """Frames/s from the median interval between consecutive time stamps."""
    return FRAMES_PER_STEP / statistics.median(b - a for a, b in itertools.pairwise(stamps))


class StepTimer(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.stamps = [time.perf_counter()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.stamps.append(time.perf_counter())


def lightning_rate(model: WorldModel, batches) -> float:
    """Frames/s of one Lightning epoch fitting `model` on a DataLoader over `batches`."""
    timer = StepTimer()
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[timer],
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    # batch_size=None: each item already is a batch; the list stays in memory.
    trainer.fit(model, DataLoader(batches, batch_size=None, shuffle=False))
    return rate(timer.stamps)


def main(rounds: int = 5, n_batches: int = 32, seed: int = 0, budget_s: float = 60.0) -> dict:
    """Warm up, then up to `rounds` interleaved rounds (>= 3; none begun past budget_s)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*no `val_dataloader`.*|.*LeafSpec.*")
    batches = make_batches(n_batches, seed)
    models = {core: make_model(core, seed) for core in ("builtin", "scratch")}
    optimizers = {core: torch.optim.Adam(m.parameters(), lr=LR) for core, m in models.items()}
    runs = {
        "builtin plain": lambda bs: plain_rate(models["builtin"], optimizers["builtin"], bs),
        "scratch plain": lambda bs: plain_rate(models["scratch"], optimizers["scratch"], bs),
        "builtin lightning": lambda bs: lightning_rate(models["builtin"], bs),
    }
    t_start = time.perf_counter()
    for run in runs.values():  # warm-up: allocator, oneDNN kernels, Lightning's first fit
        run(batches[:8])
    names, rates = list(runs), {name: [] for name in runs}
    for r in range(rounds):
        if r >= 3 and time.perf_counter() - t_start > budget_s:
            break
        for name in names[r % 3:] + names[: r % 3]:  # rotate which goes first
            rates[name].append(runs[name](batches))
    done = len(rates["builtin plain"])
    med = {name: statistics.median(v) for name, v in rates.items()}
    ratio = med["scratch plain"] / med["builtin plain"]
    overhead = 100 * (1 - med["builtin lightning"] / med["builtin plain"])

    print(f"torch {torch.__version__}, lightning {L.__version__}, "
          f"torch.get_num_threads() = {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} CPUs)")
    print(f"training throughput, {SIZE}x{SIZE} frames, hidden {HIDDEN}, batch {BATCH}, "
          f"seq_len {SEQ_LEN}")
    print(f"(median step of {n_batches} per measurement; median of {done} rounds)")
    print(f"{'core':9} {'loop':10} {'frames/s':>9}   min-max")
    notes = {"scratch plain": f"{ratio:.2f} of builtin",
             "builtin lightning": f"lightning overhead {overhead:.1f}%"}
    for name, value in med.items():
        core, loop = name.split()
        spread = f"{min(rates[name]):.0f}-{max(rates[name]):.0f}"
        note = f"  ({notes[name]})" if name in notes else ""
        print(f"{core:9} {loop:10} {value:9.0f}   {spread:>11}{note}")
    return {**med, "scratch/builtin": ratio, "lightning_overhead_pct": overhead}


if __name__ == "__main__":
    main()
