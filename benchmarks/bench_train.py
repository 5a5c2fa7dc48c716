"""Training throughput: builtin vs scratch LSTM core, and Lightning's loop vs a plain loop.

`python benchmarks/bench_train.py` trains the WorldModel at the course report's sizes
(32x32 frames, hidden 128, batch 16, seq_len 10, Adam 3e-4) on seeded random batches held in
memory, so only the model and the training loop are timed (no disk, no decoding). It answers:

  (a) is the from-the-equations ScratchLSTM fast enough next to the fused nn.LSTM (target: a
      scratch/builtin frames/s ratio >= 0.9), both trained with the same plain PyTorch loop;
  (b) what the Lightning loop (hooks, self.log, the DataLoader) costs over a plain loop on the
      same builtin model and batches.

Throughput is predicted frames per second: batch * (seq_len - 1) per optimizer step. The
Lightning time is one epoch, from on_train_epoch_start to on_train_epoch_end: per-step loop
overhead is included, the one-time Trainer/fit setup is not. The machine is shared and noisy,
so after a warm-up the three measurements are interleaved for a few rounds (rotating which
goes first) and the median of the rounds is reported.
"""

import logging
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
    t0 = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = model.window_loss(batch)
        loss.backward()
        optimizer.step()
    return len(batches) * FRAMES_PER_STEP / (time.perf_counter() - t0)


class EpochTimer(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.start


def lightning_rate(model: WorldModel, batches) -> float:
    """Frames/s of one Lightning epoch fitting `model` on a DataLoader over `batches`."""
    timer = EpochTimer()
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, callbacks=[timer],
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    # batch_size=None: each item already is a batch; the list stays in memory.
    trainer.fit(model, DataLoader(batches, batch_size=None, shuffle=False))
    return len(batches) * FRAMES_PER_STEP / timer.seconds


def main(rounds: int = 5, n_batches: int = 64, seed: int = 0) -> dict[str, float]:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available.*|.*TPU available.*")
    batches = make_batches(n_batches, seed)
    models = {core: make_model(core, seed) for core in ("builtin", "scratch")}
    optimizers = {core: torch.optim.Adam(m.parameters(), lr=LR) for core, m in models.items()}
    runs = {
        "builtin plain": lambda: plain_rate(models["builtin"], optimizers["builtin"], batches),
        "scratch plain": lambda: plain_rate(models["scratch"], optimizers["scratch"], batches),
        "builtin lightning": lambda: lightning_rate(models["builtin"], batches),
    }
    for run in runs.values():  # warm-up: allocator, kernels, Lightning imports
        run()
    rates = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order
            rates[name].append(runs[name]())
    med = {name: statistics.median(v) for name, v in rates.items()}

    ratio = med["scratch plain"] / med["builtin plain"]
    overhead = 100 * (1 - med["builtin lightning"] / med["builtin plain"])
    print(f"torch {torch.__version__}, lightning {L.__version__}, "
          f"torch.get_num_threads() = {torch.get_num_threads()}")
    print(f"training throughput, {SIZE}x{SIZE} frames, hidden {HIDDEN}, batch {BATCH}, "
          f"seq_len {SEQ_LEN} ({n_batches} steps per measurement, median of {rounds} rounds)")
    print(f"{'core':9} {'loop':10} {'frames/s':>9}   (min-max over rounds)")
    notes = {"scratch plain": f"{ratio:.2f} of builtin",
             "builtin lightning": f"lightning overhead {overhead:.1f}%"}
    for name, value in med.items():
        core, loop = name.split()
        spread = f"{min(rates[name]):.0f}-{max(rates[name]):.0f}"
        note = f"  ({notes[name]})" if name in notes else ""
        print(f"{core:9} {loop:10} {value:9.0f}   ({spread}){note}")
    return {**med, "scratch/builtin": ratio, "lightning_overhead_pct": overhead}


if __name__ == "__main__":
    main()
