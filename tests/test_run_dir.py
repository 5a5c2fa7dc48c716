"""One training per run directory: train.py refuses, in one line and before Hydra writes a
thing there, a directory that holds a finished run or that a live training is writing to; a
lock left by a training that died is taken over."""

import shutil
import subprocess
import sys

from tests.helpers import run_cli
from world_models.runs import LOCK

TRAIN = ("data=tiny", "data.collect=false", "model.hidden_size=16", "trainer.max_epochs=1")


def one_line(proc, *words: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: hydra.run.dir: ")
    for word in words:
        assert word in line, (word, line)
    return line


def test_a_finished_run_is_not_trained_over(tiny_run, tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    kept = {path: path.read_bytes() for path in (run_dir / "results.json",
                                                   run_dir / ".hydra" / "config.yaml",
                                                   run_dir / "checkpoints" / "last.ckpt")}
    proc = run_cli("train.py", *TRAIN, f"data.dir={tiny_data}", "seed=7",  # another config
                   f"hydra.run.dir={run_dir}")
    one_line(proc, str(run_dir), "finished run")
    assert {path: path.read_bytes() for path in kept} == kept


def test_a_directory_in_use_is_refused_and_a_dead_trainings_lock_taken_over(tiny_data,
                                                                             tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run_dir / LOCK).write_text(f"{alive.pid}\n")
        proc = run_cli("train.py", *TRAIN, f"data.dir={tiny_data}", f"hydra.run.dir={run_dir}")
        one_line(proc, str(run_dir), f"in use by another training (pid {alive.pid})")
        assert not (run_dir / ".hydra").exists()  # Hydra wrote nothing there
    finally:
        alive.kill()
        alive.wait()
    proc = run_cli("train.py", *TRAIN, f"data.dir={tiny_data}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "results.json").is_file()
    assert not (run_dir / LOCK).exists()  # released at the end
