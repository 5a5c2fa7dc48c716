"""What training on the model's own predictions costs against teacher forcing, per frame.

`python benchmarks/bench_sampling.py` times training steps (forward, loss, backward, Adam) on
seeded random uint8 windows held in memory, so only the model is timed:

  (a) the default model (model=imagine, train.open_loop as in train.yaml) on its windows
      (data.train_seq_len, 151 frames): the teacher-forced step (the 150 next frames from the
      150 true ones, one call) against its open-loop step (1 true frame, then 149 steps on its
      own predictions, plus train.open_loop.tf_weight times the teacher-forced loss), as the
      second half of `make train` trains it;
  (b) experiment=flow_ss (the default before open-loop training) on its 10-frame windows: the
      teacher-forced step against the scheduled-sampling step, the true frame fed with
      probability 0.5 (halfway through its decay): models/scheduled.py's two passes with one
      draw per step for the batch (train.scheduled_sampling.draw=batch, an option) and one
      per sequence and step (draw=sequence, the experiment's), and the step-by-step rollout
      the two passes replaced (the same loss and gradients).

Frames/s = batch x predicted frames per window per step, from the median CPU time of this
thread per step (other processes on a shared machine do not count), one thread; the steps of
each pair are interleaved so the two see the same machine. The process keeps the memory it
frees, as train.py's does (world_models/allocator.py).
"""

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from world_models.allocator import keep_freed_memory  # noqa: E402
from world_models.data.windows import float_batch  # noqa: E402
from world_models.models.sampling import (  # noqa: E402
    true_frame_probability,
    unroll,
    with_decay_steps,
)
from world_models.models.scheduled import (  # noqa: E402
    scheduled_rollout,
    stepwise_scheduled_rollout,
)
from world_models.models.world_model import WorldModel  # noqa: E402

BATCH, STEPS, ROUNDS = 16, 6, 3
SS_ROUNDS = 10  # (b)'s steps are short: more of them, for a steadier median under load


def model_of(*overrides: str):
    """The model train.py builds from conf/train.yaml with `overrides`, and the config."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    torch.manual_seed(0)
    size = int(cfg.data.resolution)
    model = WorldModel(**cfg.model, frame_shape=(3, size, size), protocol=cfg.train.protocol,
                       scheduled_sampling=OmegaConf.to_container(cfg.train.scheduled_sampling),
                       open_loop=OmegaConf.to_container(cfg.train.open_loop))
    return model, cfg


def window_batch(length: int, size: int) -> dict:
    g = torch.Generator().manual_seed(length)
    frames = torch.randint(0, 256, (BATCH, length, size, size, 3), generator=g, dtype=torch.uint8)
    actions = torch.rand(BATCH, length, 3, generator=g) * 2 - 1
    return float_batch({"frames": frames, "actions": actions})


def cpu_seconds(model, optimizer, loss_of) -> float:
    started = time.thread_time()
    loss = loss_of()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.thread_time() - started


def compare(model, losses: dict, frames_per_step: int, rounds: int = ROUNDS) -> dict[str, float]:
    """Frames/s of each loss's training step, interleaved step by step."""
    optimizer = model.configure_optimizers()
    times = {name: [] for name in losses}
    for loss_of in losses.values():  # warm-up
        cpu_seconds(model, optimizer, loss_of)
    for _ in range(rounds * STEPS):
        for name, loss_of in losses.items():
            times[name].append(cpu_seconds(model, optimizer, loss_of))
    return {name: frames_per_step / statistics.median(t) for name, t in times.items()}


def default_model_open_loop() -> dict[str, float]:
    model, cfg = model_of()
    batch = window_batch(int(cfg.data.train_seq_len), int(cfg.data.resolution))
    frames, actions = batch["frames"], batch["actions"][:, :-1]  # [B, L, 3, H, W], [B, T, A]
    context = int(cfg.train.open_loop.context)
    tf_weight = float(cfg.train.open_loop.tf_weight)

    def teacher_forced():
        return model.objective(model(frames[:, :-1], actions)[0], frames[:, 1:])

    def open_loop():
        predicted = unroll(model, frames, actions, context=context)
        return model.objective(predicted, frames[:, 1:]) + tf_weight * teacher_forced()

    figures = compare(model, {"teacher forcing": teacher_forced, "open loop": open_loop},
                      BATCH * actions.shape[1])
    return {**figures, "window": frames.shape[1], "own steps": actions.shape[1] - context}


def flow_ss_scheduled_sampling() -> dict[str, float]:
    model, cfg = model_of("experiment=flow_ss")
    batch = window_batch(int(cfg.data.seq_len), int(cfg.data.resolution))
    frames, actions = batch["frames"], batch["actions"][:, :-1]
    generator = torch.Generator().manual_seed(0)
    draw = cfg.train.scheduled_sampling.draw

    def teacher_forced():
        return model.objective(model(frames[:, :-1], actions)[0], frames[:, 1:])

    def scheduled(prob=0.5, draw=draw, rollout=scheduled_rollout):
        return model.objective(rollout(model, frames, actions, prob, generator, draw),
                               frames[:, 1:])

    frames_per_step = BATCH * actions.shape[1]
    figures = compare(model, {
        "teacher forcing": teacher_forced,
        "per sequence": lambda: scheduled(draw="sequence"),
        "per batch": lambda: scheduled(draw="batch"),
        "step by step": lambda: scheduled(draw="sequence", rollout=stepwise_scheduled_rollout),
    }, frames_per_step, SS_ROUNDS)
    # over the run: the probability at the middle of each tenth of the experiment's schedule
    total = 1000
    schedule = with_decay_steps(OmegaConf.to_container(cfg.train.scheduled_sampling), total)
    probs = [true_frame_probability(schedule, int((k + 0.5) * total / 10)) for k in range(10)]
    run = {"teacher forcing": 0.0, "scheduled sampling": 0.0}
    for prob in probs:
        at_prob = compare(model, {"teacher forcing": teacher_forced,
                                  "scheduled sampling": lambda prob=prob: scheduled(prob)},
                          frames_per_step, rounds=1)
        for name in run:  # seconds per step, summed over the run's tenths
            run[name] += frames_per_step / at_prob[name]
    return {**figures, "draw": draw, "probs": probs,
            "run": run["teacher forcing"] / run["scheduled sampling"]}


def main() -> dict[str, float]:
    torch.set_num_threads(1)
    keep_freed_memory()  # as train.py
    print(f"bench_sampling: torch {torch.__version__}, 1 thread, batch {BATCH}, CPU time, "
          f"load average {os.getloadavg()[0]:.1f}")
    default = default_model_open_loop()
    ratio_ol = default["open loop"] / default["teacher forcing"]
    print(f"(a) default model, {default['window']}-frame windows: teacher forcing "
          f"{default['teacher forcing']:,.0f} frames/s, open loop ({default['own steps']} own "
          f"steps + the teacher-forced term) {default['open loop']:,.0f}: ratio open loop / "
          f"teacher forcing **{ratio_ol:.2f}x**")
    flow = flow_ss_scheduled_sampling()
    tf = flow["teacher forcing"]
    ratio_ss = flow[f"per {flow['draw']}"] / tf
    print(f"(b) experiment=flow_ss, 10-frame windows, p(true frame)=0.5: teacher forcing "
          f"{tf:,.0f} frames/s; scheduled sampling with a draw per sequence "
          f"{flow['per sequence']:,.0f} ({flow['per sequence'] / tf:.2f}x), per batch "
          f"{flow['per batch']:,.0f} ({flow['per batch'] / tf:.2f}x), step by step "
          f"{flow['step by step']:,.0f} ({flow['step by step'] / tf:.2f}x): ratio at p=0.5 "
          f"(draw={flow['draw']}, the experiment's) / teacher forcing **{ratio_ss:.2f}x**")
    probs = ", ".join(f"{p:.2f}" for p in flow["probs"])
    print(f"(c) experiment=flow_ss over its schedule (one step at p = {probs}, the middle of "
          f"each tenth of the run; draw={flow['draw']}): training time of teacher forcing / "
          f"scheduled sampling **{flow['run']:.2f}x**")
    return {"open_loop/teacher_forcing": ratio_ol, "scheduled_sampling/teacher_forcing": ratio_ss,
            "scheduled_sampling_run/teacher_forcing": flow["run"]}


if __name__ == "__main__":
    main()
