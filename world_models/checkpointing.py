"""Checkpoints that keep their best epoch across a resume into a new run directory."""

import os
import shutil
import zipfile
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

from world_models.errors import UserError


def check_checkpoint_file(path, key: str) -> Path:
    """Refuse, naming `key`, a path that is no checkpoint file before torch tries to read it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{key}: '{path}' is a directory, expected a checkpoint file "
                        f"(e.g. <run>/checkpoints/last.ckpt)")
    if not path.is_file():
        raise UserError(f"{key}: '{path}' does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise UserError(f"{key}: '{path}' is not a checkpoint (not the zip archive torch.save "
                        f"writes)")
    return path


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose best survives `ckpt_path=...` into another run directory.

    Lightning restores `best_model_score` only when the checkpoint directory is unchanged.
    A resume into a new run directory would then take its first validated epoch as the best
    and test another model than the uninterrupted run did. Here the resumed run's best
    checkpoint is copied into the new directory and its score restored, so the new run is
    complete on its own and its results equal the uninterrupted run's.
    """

    _resumed_from = None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # Lightning calls this just before load_state_dict; the path locates a moved run.
        self._resumed_from = trainer.ckpt_path

    def load_state_dict(self, state_dict: dict) -> None:
        old_dir = state_dict.get("dirpath")
        moved = old_dir is not None and self.dirpath is not None and old_dir != self.dirpath
        if moved and state_dict.get("best_model_score") is not None:
            state_dict = self._carry_into_dirpath(state_dict)
        super().load_state_dict(state_dict)

    def _carry_into_dirpath(self, state: dict) -> dict:
        """Copy the old run's kept checkpoints here; return the state with their new paths."""
        new_paths = {}
        for old in {*state.get("best_k_models", {}), state["best_model_path"]} - {""}:
            new_paths[old] = self._copy_here(old)
        state = dict(state, dirpath=self.dirpath, last_model_path="")
        state["best_model_path"] = new_paths.get(state["best_model_path"], "")
        kept = state.get("best_k_models", {})
        state["best_k_models"] = {new_paths[path]: score for path, score in kept.items()}
        state["kth_best_model_path"] = new_paths.get(state.get("kth_best_model_path", ""), "")
        return state

    def _copy_here(self, old: str) -> str:
        source = Path(old)
        if not source.is_file() and self._resumed_from:  # the run directory was moved
            source = Path(self._resumed_from).parent / source.name
        if not source.is_file():
            raise UserError(
                f"ckpt_path: the resumed run's best checkpoint '{old}' is missing; without it "
                f"the resumed run would test another epoch than the uninterrupted one"
            )
        os.makedirs(self.dirpath, exist_ok=True)
        target = os.path.join(self.dirpath, source.name)
        tmp = f"{target}.{os.getpid()}.tmp"  # DDP ranks may copy at once; each replaces whole
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return target
