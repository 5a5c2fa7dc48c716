"""benchmarks/bench_sampling.py: its three ratios in `make bench`, from real steps."""

import pytest

from tests.helpers import run_cli


@pytest.mark.slow
def test_it_prints_its_ratios_against_teacher_forcing():
    proc = run_cli("benchmarks/bench_sampling.py", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    ratios = [float(line.rsplit("**", 2)[1].rstrip("x")) for line in lines if "**" in line]
    assert [line[:3] for line in lines if "**" in line] == ["(a)", "(b)", "(c)"]
    assert "per sequence" in lines[-2] and "per batch" in lines[-2]  # both draws side by side
    # feeding back its own predictions step by step costs more than one batched call
    assert all(0 < ratio < 1 for ratio in ratios), proc.stdout
