"""Which data an evaluation reads: the episodes it rolls out (the run's own test split by
default, or another dataset) and the training data its baselines stand for."""

from omegaconf import DictConfig, OmegaConf

from world_models import runs
from world_models.data.datamodule import SPLITS, CarRacingDataModule
from world_models.errors import UserError


def warn_if_split_differs(ckpt, cfg: DictConfig) -> None:
    """Warn when data.split or data.seed differ from the checkpoint's training run.

    They draw the test split; other values could put training episodes in it. The
    training run's config is the one of the run directory the checkpoint sits in.
    """
    run_dir = runs.run_of(ckpt)
    run_config = runs.run_config(run_dir)
    if run_config is None:  # moved, or made elsewhere: nothing to compare with
        return
    trained = OmegaConf.to_container(run_config.data, resolve=True)
    ours = OmegaConf.to_container(cfg.data, resolve=True)
    for key in ("split", "seed"):
        if ours[key] != trained.get(key):
            print(f"warning: data.{key}={ours[key]} but the checkpoint was trained with "
                  f"data.{key}={trained.get(key)} ({run_dir}); its {cfg.split} split may differ")


def user_overrides() -> list[str] | None:
    """The key=value words of this command line; None when called outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def with_training_data(cfg: DictConfig, overrides: list[str] | None) -> DictConfig:
    """data.* from the checkpoint's training run, with the command line's data.* words on top.

    The run's test split is only the one it held out with its own data.dir, split and seed,
    so those are the right defaults (runs.run_config); a word such as data.batch_size=4 changes
    that one key, not the dataset. A data group or paths.data_root on the command line chooses
    other data: then `cfg` is taken as it is, as it is outside a command line (overrides None).
    """
    run_dir = runs.run_of(cfg.ckpt)
    run_config = runs.run_config(run_dir)
    if overrides is None or run_config is None:
        return cfg
    keys = [runs.key_of(w) for w in overrides if runs.is_data_word(w)]
    if any(key in ("data", "paths.data_root") for key in keys):
        return cfg
    data = OmegaConf.merge(run_config.data, {"collect": False})
    for key in keys:
        OmegaConf.update(data, key.removeprefix("data."), OmegaConf.select(cfg, key), merge=False)
    cfg = cfg.copy()
    cfg.data = data
    print(f"data: {cfg.data.dir} (from the training run, {run_dir}; set data.* to change)")
    return cfg


def training_data(cfg: DictConfig, datamodule: CarRacingDataModule) -> CarRacingDataModule:
    """The data the checkpoint's run trained on, for the baselines that stand for "learned
    nothing" (the mean training frame, the climatology ensemble).

    On other data (another data.dir, split=all) the evaluated data's own mean frame would
    know the distribution being tested; the run's training split does not. When the run's
    config or data is gone, the evaluated data's training split stands in, with a note.
    """
    run_config = runs.run_config(runs.run_of(cfg.ckpt))
    if run_config is None:
        print(f"baselines: the checkpoint's run config is not beside it; the mean frame and the "
              f"climatology come from the training split of {cfg.data.dir}")
        return datamodule
    data = OmegaConf.merge(run_config.data, {"collect": False})
    ours = OmegaConf.to_container(cfg.data, resolve=True)
    theirs = OmegaConf.to_container(data, resolve=True)
    if all(theirs.get(k) == ours.get(k) for k in ("dir", "split", "seed")):
        return datamodule
    trained = CarRacingDataModule.from_config(OmegaConf.create({"data": theirs}))
    try:
        trained.setup()
    except UserError as err:
        print(f"baselines: the run's training data is not readable ({err}); the mean frame and "
              f"the climatology come from the training split of {cfg.data.dir}")
        return datamodule
    print(f"baselines: mean frame and climatology from the run's training data, {trained.dir}")
    return trained


def select_sequences(datamodule, split: str, horizon: int) -> tuple[list[dict], int]:
    """Episodes of `split` with >= horizon steps; if none, the longest ones and their length."""
    names = SPLITS if split == "all" else (split,)
    episodes = [ep for name in names for ep in datamodule.episodes[name]]
    if not episodes:
        raise UserError(f"split: the '{split}' split of '{datamodule.dir}' holds no episodes")
    longest = max(ep.steps for ep in episodes)
    if longest < horizon:
        print(f"no {split} episode has {horizon} steps; using the longest ({longest} steps) as the"
              f" horizon")
        horizon = longest
    sequences = [s for name in names for s in datamodule.sequences(name, min_steps=horizon)]
    return sequences, horizon
