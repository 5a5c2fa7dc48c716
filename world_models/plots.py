"""Pictures: a rollout's grid of steps, its frames as PNG and GIF, per-step and per-epoch curves.

truth, tf and ar are one sequence's frames 1..T [T, 3, H, W] in [0, 1]: the true
frames, the teacher-forcing and the autoregressive predictions of them. samples, when given,
are sampled rollouts of a model with a latent [S, T, 3, H, W], shown under the true frames.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

SCALE = 4  # 32x32 frames are too small to read at their own size
PAD = 4  # pixels between cells
LABEL_WIDTH = 150  # the row-label column of the grid
HEADER = 24  # the column-label row of the grid and the GIF
ERROR_GAIN = 4  # |error| x4, so an error of 0.05 is visible and 0.25 or more saturates
GRID_STEPS = (*range(1, 11), 25, 50, 100, 150)
KINDS = {"ground-truth": "ground truth", "teacher-forcing": "teacher forcing",
         "autoregressive": "autoregressive"}


def to_image(frame: torch.Tensor, scale: int = SCALE) -> Image.Image:
    """[3, H, W] in [0, 1] -> RGB image, upscaled by nearest neighbour (pixels stay pixels)."""
    pixels = (frame.detach().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def error_image(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """|pred - truth| averaged over channels, x ERROR_GAIN, coloured by inferno (black = exact).

    [T, 3, H, W] -> [T, 3, H, W]; a colour map, so a saturated error stands out from white.
    """
    error = (pred - truth).abs().mean(dim=1).mul(ERROR_GAIN).clamp(0, 1)  # [T, H, W]
    colours = matplotlib.colormaps["inferno"](error.cpu().numpy())[..., :3]  # [T, H, W, 3]
    return torch.from_numpy(colours).float().permute(0, 3, 1, 2)


def variant_line(index: int) -> dict:
    """Matplotlib's ten colours, then again dash-dotted: the style of a study's index-th
    variant, so that the eleventh is not drawn as the first."""
    return {"color": f"C{index % 10}", "ls": ("-", "-.")[index // 10 % 2]}


def font(size: int = 14) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def grid_steps(horizon: int) -> list[int]:
    """Steps 1..10, 25, 50, 100, 150 that a rollout of `horizon` steps reaches."""
    return [s for s in GRID_STEPS if s <= horizon]


def rollout_grid(truth, tf, ar, steps, samples=None) -> Image.Image:
    """Rows: truth, the samples if any, teacher forcing, autoregressive, its error; a column
    per step (1-based)."""
    error = error_image(ar, truth)
    rows = [("ground truth", truth), *sample_rows(samples),
            ("teacher forcing", tf), ("autoregressive", ar),
            (f"|AR - truth| x{ERROR_GAIN}\nblack 0, yellow >= {1 / ERROR_GAIN:.2g}", error)]
    cell_h, cell_w = truth.shape[-2] * SCALE, truth.shape[-1] * SCALE
    width = LABEL_WIDTH + len(steps) * (cell_w + PAD)
    height = HEADER + len(rows) * (cell_h + PAD)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for c, step in enumerate(steps):
        draw.text((LABEL_WIDTH + c * (cell_w + PAD), 4), f"step {step}", fill="black", font=font())
    for r, (label, frames) in enumerate(rows):
        top = HEADER + r * (cell_h + PAD)
        draw.text((4, top + cell_h // 2 - 16), label, fill="black", font=font())
        for c, step in enumerate(steps):
            grid.paste(to_image(frames[step - 1]), (LABEL_WIDTH + c * (cell_w + PAD), top))
    return grid


def sample_rows(samples) -> list[tuple[str, torch.Tensor]]:
    """("sample 1", frames), ...: one labelled row per sampled rollout; none for None."""
    return [] if samples is None else [(f"sample {k + 1}", s) for k, s in enumerate(samples)]


def save_frames(directory, truth, tf, ar) -> None:
    """directory/{ground-truth,teacher-forcing,autoregressive}/<step>.png, at 32x32 as predicted."""
    digits = len(str(len(truth)))
    for kind, frames in zip(KINDS, (truth, tf, ar), strict=True):
        folder = Path(directory) / kind
        folder.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(frames, start=1):
            to_image(frame, scale=1).save(folder / f"{t:0{digits}d}.png")


def rollout_gif(path, truth, tf, ar, ms_per_frame: int = 100, samples=None) -> None:
    """Truth, the samples if any, teacher forcing and autoregressive side by side, one GIF
    frame per step."""
    cell_h, cell_w = truth.shape[-2] * SCALE, truth.shape[-1] * SCALE
    panels = [("ground truth", truth), *sample_rows(samples),
              ("teacher forcing", tf), ("autoregressive", ar)]
    pictures = []
    for t in range(len(truth)):
        picture = Image.new("RGB", (len(panels) * (cell_w + PAD) - PAD, HEADER + cell_h),
                            "white")
        draw = ImageDraw.Draw(picture)
        for p, (label, frames) in enumerate(panels):
            draw.text((p * (cell_w + PAD) + 2, 4), label, fill="black", font=font(12))
            picture.paste(to_image(frames[t]), (p * (cell_w + PAD), HEADER))
        draw.text((2, HEADER + cell_h - 14), f"step {t + 1}", fill="white", font=font(12))
        pictures.append(picture)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=ms_per_frame,
                     loop=0)


def loss_curve(path, table: list[dict], context: int | None = None) -> None:
    """Per-step MSE of every strategy in `table` (rows of per_step_table), log y, ±1 std band.

    A rollout given `context` true frames predicts frames 1..context from true frames;
    a dotted line marks where it goes on alone.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    if context:
        ax.axvline(context + 0.5, color="gray", ls=":", label=f"after {context} true frames")
    lows, highs = [], []
    for strategy in dict.fromkeys(row["strategy"] for row in table):
        rows = [r for r in table if r["strategy"] == strategy and r["metric"] == "mse"]
        if not rows:  # a strategy without an MSE (action_sensitivity)
            continue
        steps = np.array([r["step"] for r in rows])
        mean = np.array([r["mean"] for r in rows])
        std = np.array([r["std"] for r in rows])
        (line,) = ax.plot(steps, mean, label=strategy.replace("_", " "))
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
        lows.append(mean.min())
        highs.append((mean + std).max())
    ax.set_yscale("log")
    # Limits from the means: where mean - std <= 0 the band runs off the bottom of the
    # log axis instead of stretching it down to 1e-300.
    ax.set_ylim(max(min(lows), 1e-8) / 2, max(highs) * 1.5)
    n = table[0]["n"]
    ax.set(xlabel="prediction step (frames after the first given frame)", ylabel="MSE per frame",
           title=f"Per-step MSE over {n} sequence{'s' * (n != 1)} (band: ±1 std over sequences)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def epoch_curves(path, curves: dict[str, dict[str, tuple[list, list]]]) -> None:
    """Loss per epoch of several runs: run -> split ('train', 'val') -> (epochs, losses).

    A colour per run, solid for training and dashed for validation, so the runs overlay;
    log y, since the loss falls by orders of magnitude in the first epochs.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for colour, (run, splits) in enumerate(curves.items()):
        # Earlier runs wider, so equal curves (the two cores from one seed) both show.
        width = 1.2 + 1.5 * (len(curves) - 1 - colour)
        for split, (epochs, losses) in splits.items():
            ax.plot(epochs, losses, color=f"C{colour}", ls="-" if split == "train" else "--",
                    lw=width, marker=".", label=f"{run} {split}")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="MSE per frame", title="Training and validation loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def frame_table(cells, row_labels, column_labels) -> Image.Image:
    """Frames [3, H, W] in rows x columns, upscaled, labelled on the left and on top."""
    cell_h, cell_w = cells[0][0].shape[-2] * SCALE, cells[0][0].shape[-1] * SCALE
    width = LABEL_WIDTH + len(column_labels) * (cell_w + PAD)
    table = Image.new("RGB", (width, HEADER + len(cells) * (cell_h + PAD)), "white")
    draw = ImageDraw.Draw(table)
    for c, label in enumerate(column_labels):
        draw.text((LABEL_WIDTH + c * (cell_w + PAD), 4), label, fill="black", font=font())
    for r, (label, row) in enumerate(zip(row_labels, cells, strict=True)):
        top = HEADER + r * (cell_h + PAD)
        draw.text((4, top + cell_h // 2 - 8), label, fill="black", font=font())
        for c, frame in enumerate(row):
            table.paste(to_image(frame), (LABEL_WIDTH + c * (cell_w + PAD), top))
    return table


def save_gif(path, pictures: list[Image.Image], ms_per_frame: int = 100) -> None:
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=ms_per_frame,
                     loop=0)
