"""The numeric and yes/no settings a user can type, and their types, checked before anything
runs.

A value of the wrong type (`data.seq_len=abc`) would otherwise reach a comparison or a
DataLoader and end in a TypeError traceback far from the key that caused it.
"""

from omegaconf import DictConfig, OmegaConf

_MISSING = object()
INT, FLOAT, OPTIONAL_INT = "an integer", "a number", "an integer or null"
BOOL = "true or false"  # a typo such as model.fade=maybe would otherwise count as true

TYPES = {
    "seed": INT,
    "data.num_episodes": INT,
    "data.episode_steps": INT,
    "data.skip_frames": INT,
    "data.resolution": INT,
    "data.seq_len": INT,
    "data.stride": OPTIONAL_INT,
    "data.train_seq_len": OPTIONAL_INT,
    "data.train_stride": OPTIONAL_INT,
    "data.batch_size": INT,
    "data.num_workers": INT,
    "data.seed": INT,
    # model.*: the types of ModelSettings' fields (models/hparams.py), added by types()
    "train.open_loop.detach": BOOL,
    "train.open_loop.horizon": INT,
    "train.open_loop.context": INT,
    "train.open_loop.warmup": FLOAT,
    "train.open_loop.warmup_window": INT,
    "train.open_loop.ramp": FLOAT,
    "train.open_loop.tf_weight": FLOAT,
    "trainer.max_epochs": INT,
    "train.input_noise": FLOAT,
    "collect.workers": OPTIONAL_INT,
    "collect.shard": INT,
    "collect.num_shards": INT,
    "rollout.horizon": INT,
    "rollout.context": INT,
    "rollout.batch_size": INT,
    "rollout.samples": INT,
    "rollout.seed": INT,
    "rollout.persistence": FLOAT,
    "rollout.temperature": FLOAT,
}


def _fits(value, kind: str) -> bool:
    if kind == BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == FLOAT:
        return isinstance(value, (int, float))
    return isinstance(value, int) or (kind == OPTIONAL_INT and value is None)


def types() -> dict[str, str]:
    """TYPES and the model's settings' types, where they are defined (models/hparams.py)."""
    from world_models.models.hparams import model_types

    kinds = {int: INT, float: FLOAT, bool: BOOL}  # a str is checked against its choices
    return {**TYPES, **{key: kinds[t] for key, t in model_types().items() if t in kinds}}


def check_types(cfg: DictConfig) -> None:
    """Refuse, naming the key, any setting of types() that `cfg` holds with another type."""
    from world_models.errors import UserError

    for key, kind in types().items():
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_resolution_failure=False)
        if value is not _MISSING and not _fits(value, kind):
            raise UserError(f"{key}: expected {kind}, got '{value}'")


def check_known(node: DictConfig, prefix: str, known) -> None:
    """Refuse a key of `node` (the config at `prefix`) that is not among `known`: a key added
    with + (`+model.bogus=1`) that nothing would read, or read as a surprise."""
    from world_models.errors import UserError

    for key in node:
        if key not in known:
            raise UserError(f"{prefix}.{key}: no such setting; {prefix} takes "
                            f"{', '.join(known)}")
