"""The model's settings, defined once: ModelSettings holds every value WorldModel is built
from (model.* of the config, and what the model takes from data.* and train.*), their types
(world_models.settings refuses a mistyped value with them) and the checks that types cannot
express (ranges, combinations), each naming its key. A checkpoint stores them as its
hyper-parameters and rebuilds the model from them."""

import dataclasses
import typing
from dataclasses import dataclass, field

from world_models.errors import UserError

PROTOCOLS = ("bptt", "per_step")
STILL_READS = ("state", "actions")  # the core's state, or warps.StillTracker
# The settings the model takes from elsewhere in the run config; the others are model.*.
FROM_RUN = ("frame_shape", "protocol", "input_noise", "scheduled_sampling", "open_loop")


@dataclass
class ModelSettings:
    core: str = "builtin"
    hidden_size: int = 128
    lr: float = 3e-4
    frame_shape: tuple[int, int, int] = (3, 32, 32)  # from data.resolution
    action_size: int = 3
    protocol: str = "bptt"  # train.protocol
    encoder: str = "flat"
    residual: bool = False
    warp: str = "none"
    l1_weight: float = 0.0
    scheduled_sampling: dict = field(default_factory=lambda: {"schedule": "none"})  # train.*
    input_noise: float = 0.0  # train.input_noise
    gate: bool = False
    open_loop: dict = field(default_factory=lambda: {"horizon": 0})  # train.open_loop
    ssim_weight: float = 0.0
    log_mse_weight: float = 0.0
    own_steps_input: bool = False
    fill: bool = False
    fade: bool = False
    fade_lr_scale: float = 1.0
    fade_frame: str = "learned"
    fade_penalty: float = 0.0
    still: bool = False
    still_lr_scale: float = 1.0
    still_grid: int = 1
    still_floor: float = 0.0
    still_reads: str = "state"
    latent: str = "none"
    latent_size: int = 16
    kl_weight: float = 1e-5
    kl_warmup: float = 0.5
    compile: bool = False
    feedback: str = "float"

    def __post_init__(self):
        self.frame_shape = tuple(self.frame_shape)
        self.scheduled_sampling = dict(self.scheduled_sampling or {"schedule": "none"})
        self.open_loop = dict(self.open_loop or {"horizon": 0})

    @classmethod
    def from_config(cls, cfg, frame_shape) -> "ModelSettings":
        """cfg.model with train.protocol, train.input_noise, train.scheduled_sampling and
        train.open_loop, for frames of frame_shape [3, H, W]."""
        from omegaconf import OmegaConf

        train = cfg.train
        return cls(**OmegaConf.to_container(cfg.model), frame_shape=frame_shape,
                   protocol=train.protocol, input_noise=train.input_noise,
                   scheduled_sampling=OmegaConf.to_container(train.scheduled_sampling),
                   open_loop=OmegaConf.to_container(train.open_loop))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Refuse impossible settings before anything is built, naming the key."""
        from world_models.models.latent import check_latent
        from world_models.models.sampling import check_open_loop, check_schedule

        check_parts(self)
        if self.gate and self.warp == "none" and not self.residual:
            raise UserError("model.gate: gates the carried frame, so it needs "
                            "model.warp=affine|flow or model.residual=true")
        if self.fill and not self.gate:
            raise UserError("model.fill: fills what the keep gate forgets, so it needs "
                            "model.gate=true")
        schedule = self.scheduled_sampling
        check_schedule(schedule)
        check_open_loop(self.open_loop, schedule, self.protocol)
        if self.protocol == "per_step" and schedule["schedule"] != "none":
            raise UserError("train.scheduled_sampling.schedule: needs train.protocol=bptt "
                            f"(per_step feeds one true frame per optimizer step), "
                            f"got '{schedule['schedule']}' with per_step")
        check_latent(self.latent, self.latent_size, self.kl_weight, self.kl_warmup,
                     self.protocol)


MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelSettings) if f.name not in FROM_RUN)


def model_types() -> dict[str, type]:
    """model.<key> -> its type (int, float, bool or str), from ModelSettings."""
    hints = typing.get_type_hints(ModelSettings)
    return {f"model.{key}": hints[key] for key in MODEL_KEYS}


def check_parts(s: ModelSettings) -> None:
    """The core, codec and warp exist, and their sizes and rates can work."""
    from world_models.models.cores import CORES
    from world_models.models.frames import FRAME_CODECS
    from world_models.models.sampling import FEEDBACK
    from world_models.models.warps import WARPS, Fade

    if s.core not in CORES:
        raise UserError(f"model.core: unknown core '{s.core}'; "
                        f"available: {', '.join(sorted(CORES))}")
    if s.hidden_size <= 0:
        raise UserError(f"model.hidden_size: expected > 0, got {s.hidden_size}")
    if s.core == "transformer" and s.hidden_size % 4:
        raise UserError(f"model.hidden_size: the transformer's 4 heads need a multiple of 4, "
                        f"got {s.hidden_size}")
    if not s.lr > 0:
        raise UserError(f"model.lr: expected > 0, got {s.lr}")
    if s.protocol not in PROTOCOLS:
        raise UserError(f"train.protocol: expected one of {', '.join(PROTOCOLS)}, "
                        f"got '{s.protocol}'")
    if s.encoder not in FRAME_CODECS:
        raise UserError(f"model.encoder: unknown encoder '{s.encoder}'; "
                        f"available: {', '.join(sorted(FRAME_CODECS))}")
    multiple = FRAME_CODECS[s.encoder][2]
    if any(size % multiple for size in s.frame_shape[1:]):
        raise UserError(f"model.encoder: '{s.encoder}' needs frame sides divisible by "
                        f"{multiple}, got {list(s.frame_shape[1:])} (data.resolution)")
    if s.warp not in WARPS:
        raise UserError(f"model.warp: unknown warp '{s.warp}'; available: {', '.join(WARPS)}")
    if not s.l1_weight >= 0:
        raise UserError(f"model.l1_weight: expected >= 0, got {s.l1_weight}")
    if not s.ssim_weight >= 0:
        raise UserError(f"model.ssim_weight: expected >= 0, got {s.ssim_weight}")
    if not s.log_mse_weight >= 0:
        raise UserError(f"model.log_mse_weight: expected >= 0, got {s.log_mse_weight}")
    if not s.fade_lr_scale > 0:
        raise UserError(f"model.fade_lr_scale: expected > 0, got {s.fade_lr_scale}")
    if not s.fade_penalty >= 0:
        raise UserError(f"model.fade_penalty: expected >= 0, got {s.fade_penalty}")
    if not s.still_lr_scale > 0:
        raise UserError(f"model.still_lr_scale: expected > 0, got {s.still_lr_scale}")
    if s.still_grid < 1 or any(size % s.still_grid for size in s.frame_shape[1:]):
        raise UserError(f"model.still_grid: expected >= 1 and dividing the frame's sides "
                        f"{list(s.frame_shape[1:])} (data.resolution), got {s.still_grid}")
    if not 0 <= s.still_floor < 1:
        raise UserError(f"model.still_floor: expected 0 <= floor < 1, got {s.still_floor}")
    if s.still_reads not in STILL_READS:
        raise UserError(f"model.still_reads: expected one of {', '.join(STILL_READS)}, "
                        f"got '{s.still_reads}'")
    if s.feedback not in FEEDBACK:
        raise UserError(f"model.feedback: expected one of {', '.join(FEEDBACK)}, "
                        f"got '{s.feedback}'")
    if s.fade_frame not in Fade.FRAMES:
        raise UserError(f"model.fade_frame: expected one of {', '.join(Fade.FRAMES)}, "
                        f"got '{s.fade_frame}'")
    if not s.input_noise >= 0:
        raise UserError(f"train.input_noise: expected >= 0, got {s.input_noise}")
