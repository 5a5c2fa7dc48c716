"""benchmarks/bench_sampling.py: both ratios of `make bench`'s first line, from real steps."""

import pytest

from tests.helpers import run_cli


@pytest.mark.slow
def test_it_prints_both_ratios_against_teacher_forcing():
    proc = run_cli("benchmarks/bench_sampling.py", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    ratios = [float(line.rsplit("**", 2)[1].rstrip("x")) for line in lines if "**" in line]
    assert [line[:3] for line in lines if "**" in line] == ["(a)", "(b)"]
    # feeding back its own predictions step by step costs more than one batched call
    assert all(0 < ratio < 1 for ratio in ratios), proc.stdout
