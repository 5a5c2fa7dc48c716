"""The run directory of a training run, and finding the run to resume.

A run directory (<paths.log_dir>/train/<time>/, or a sweep's job directory) holds
  .hydra/config.yaml       the composed config the run was started with
  checkpoints/last.ckpt    the last finished epoch: what a resume starts from
  checkpoints/best-*.ckpt  the best epoch by validation loss
  results.json             written once the run is tested: its presence means finished
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from world_models.errors import UserError

# Keys that may differ between an interrupted run and its resume: where files go, and the
# resume itself.
NOT_COMPARED = ("ckpt_path", "paths")


def comparable(config) -> dict:
    """The settings that decide what a run computes, as a plain dict (unresolved)."""
    container = OmegaConf.to_container(config, resolve=False)
    return {k: v for k, v in container.items() if k not in NOT_COMPARED}


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / "results.json").is_file()


def newest_interrupted_run(log_dir, cfg: DictConfig) -> Path:
    """last.ckpt of the newest unfinished run under `log_dir` composed as `cfg` is."""
    wanted = comparable(cfg)
    found = []
    for last in Path(log_dir).rglob("checkpoints/last.ckpt"):
        run_dir = last.parent.parent
        config = run_dir / ".hydra" / "config.yaml"
        if is_finished(run_dir) or not config.is_file():
            continue
        if comparable(OmegaConf.load(config)) == wanted:
            found.append((last.stat().st_mtime, last))
    if not found:
        raise UserError(
            f"ckpt_path=last: no interrupted run (checkpoints/last.ckpt, no results.json) with "
            f"this config under '{log_dir}'; give the checkpoint's path instead"
        )
    return max(found)[1]


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """cfg.ckpt_path, with `last` replaced by the newest interrupted run of the same config."""
    if cfg.ckpt_path != "last":
        return cfg.ckpt_path
    path = newest_interrupted_run(cfg.paths.log_dir, cfg)
    print(f"ckpt_path=last: resuming {path}")
    return str(path)
