"""The default model on a GPU: training frames/s at batch 16 and 256, fp32 and bf16 autocast,
eager and with model.compile=true, and the peak GPU memory of each; under 5 minutes on one GPU.

    python benchmarks/bench_gpu.py            # cuda if there is one, else "no GPU, skipped"
    python benchmarks/bench_gpu.py --device cpu --steps 2 --batches 2   # the same code on CPU

A step is the default model's open-loop training step (conf/model/imagine.yaml, windows of
data.train_seq_len=51 frames, 49 steps on its own predictions after one true frame, plus
the teacher-forced term),
on seeded random uint8 windows already on the device, so only the model is timed. Frames/s =
batch x 50 predicted frames per optimizer step, from the median of the timed steps.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from world_models.models.sampling import unroll  # noqa: E402
from world_models.models.world_model import WorldModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LENGTH, TF_WEIGHT = 51, 10.0


def default_model(device: str, compiled: bool = False) -> WorldModel:
    """The default model (model=imagine), with model.compile=`compiled`."""
    settings = OmegaConf.to_container(OmegaConf.merge(
        OmegaConf.load(ROOT / "conf" / "model" / "builtin.yaml"),
        OmegaConf.load(ROOT / "conf" / "model" / "flow.yaml"),
        OmegaConf.load(ROOT / "conf" / "model" / "imagine.yaml")))
    settings.pop("defaults", None)
    settings["compile"] = compiled
    torch.manual_seed(0)
    return WorldModel(**settings).to(device)


def step_seconds(model, optimizer, frames, actions, precision: str, device: str) -> float:
    """One open-loop training step, synchronised, in seconds."""
    start = time.perf_counter()
    with torch.autocast(device_type=device, dtype=torch.bfloat16,
                        enabled=precision == "bf16"):
        inputs = frames.float() / 255.0
        predicted = unroll(model, inputs, actions[:, :-1], context=1)
        teacher, _ = model(inputs[:, :-1], actions[:, :-1])
        loss = model.objective(predicted, inputs[:, 1:]) + TF_WEIGHT * model.objective(
            teacher, inputs[:, 1:])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(device: str, batch: int, precision: str, compiled: bool, steps: int) -> dict:
    model = default_model(device, compiled)
    optimizer = model.configure_optimizers()
    g = torch.Generator().manual_seed(batch)
    frames = torch.randint(0, 256, (batch, LENGTH, 3, 32, 32), generator=g,
                           dtype=torch.uint8).to(device)
    actions = (torch.rand(batch, LENGTH, 3, generator=g) * 2 - 1).to(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step_seconds(model, optimizer, frames, actions, precision, device)  # warm-up (and compile)
    times = [step_seconds(model, optimizer, frames, actions, precision, device)
             for _ in range(steps)]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    return {"frames/s": batch * (LENGTH - 1) / statistics.median(times), "peak MiB": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled rows")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no GPU, skipped (torch.cuda.is_available() is False)")
        return 0
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"bench_gpu: the default model's open-loop step on {name}, torch {torch.__version__}")
    print(f"{'batch':>6} {'precision':>9} {'compile':>8} {'frames/s':>10} {'peak MiB':>9}")
    for batch in args.batches:
        for precision in ("fp32", "bf16"):
            for compiled in (False,) if args.no_compile else (False, True):
                row = measure(args.device, batch, precision, compiled, args.steps)
                print(f"{batch:>6} {precision:>9} {str(compiled):>8} "
                      f"{row['frames/s']:>10,.0f} {row['peak MiB']:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
