"""The checks of the model's settings (model.* and the train.* the model reads), made before
anything is built, each naming its key; WorldModel makes them again when a checkpoint rebuilds
it."""

from world_models.errors import UserError
from world_models.models.cores import CORES
from world_models.models.frames import FRAME_CODECS
from world_models.models.sampling import check_open_loop, check_schedule
from world_models.models.warps import WARPS, Fade

PROTOCOLS = ("bptt", "per_step")


def check_hparams(core: str, hidden_size: int, lr: float, protocol: str, *,
                  encoder: str = "flat", frame_shape=(3, 32, 32), warp: str = "none",
                  l1_weight: float = 0.0, scheduled_sampling: dict | None = None,
                  input_noise: float = 0.0, gate: bool = False, residual: bool = False,
                  open_loop: dict | None = None, ssim_weight: float = 0.0,
                  fill: bool = False, fade_lr_scale: float = 1.0,
                  fade_frame: str = "learned") -> None:
    """Refuse impossible settings before anything is built, naming the key."""
    if core not in CORES:
        raise UserError(f"model.core: unknown core '{core}'; available: {', '.join(sorted(CORES))}")
    if hidden_size <= 0:
        raise UserError(f"model.hidden_size: expected > 0, got {hidden_size}")
    if core == "transformer" and hidden_size % 4:
        raise UserError(f"model.hidden_size: the transformer's 4 heads need a multiple of 4, "
                        f"got {hidden_size}")
    if not lr > 0:
        raise UserError(f"model.lr: expected > 0, got {lr}")
    if protocol not in PROTOCOLS:
        raise UserError(f"train.protocol: expected one of {', '.join(PROTOCOLS)}, got '{protocol}'")
    if encoder not in FRAME_CODECS:
        raise UserError(f"model.encoder: unknown encoder '{encoder}'; "
                        f"available: {', '.join(sorted(FRAME_CODECS))}")
    multiple = FRAME_CODECS[encoder][2]
    if any(size % multiple for size in frame_shape[1:]):
        raise UserError(f"model.encoder: '{encoder}' needs frame sides divisible by {multiple}, "
                        f"got {list(frame_shape[1:])} (data.resolution)")
    if warp not in WARPS:
        raise UserError(f"model.warp: unknown warp '{warp}'; available: {', '.join(WARPS)}")
    if not l1_weight >= 0:
        raise UserError(f"model.l1_weight: expected >= 0, got {l1_weight}")
    if not ssim_weight >= 0:
        raise UserError(f"model.ssim_weight: expected >= 0, got {ssim_weight}")
    if not fade_lr_scale > 0:
        raise UserError(f"model.fade_lr_scale: expected > 0, got {fade_lr_scale}")
    if fade_frame not in Fade.FRAMES:
        raise UserError(f"model.fade_frame: expected one of {', '.join(Fade.FRAMES)}, "
                        f"got '{fade_frame}'")
    if not input_noise >= 0:
        raise UserError(f"train.input_noise: expected >= 0, got {input_noise}")
    if gate and warp == "none" and not residual:
        raise UserError("model.gate: gates the carried frame, so it needs model.warp=affine|flow "
                        "or model.residual=true")
    if fill and not gate:
        raise UserError("model.fill: fills what the keep gate forgets, so it needs "
                        "model.gate=true")
    schedule = scheduled_sampling or {"schedule": "none"}
    check_schedule(schedule)
    check_open_loop(open_loop or {"horizon": 0}, schedule, protocol)
    if protocol == "per_step" and schedule["schedule"] != "none":
        raise UserError("train.scheduled_sampling.schedule: needs train.protocol=bptt "
                        f"(per_step feeds one true frame per optimizer step), "
                        f"got '{schedule['schedule']}' with per_step")
