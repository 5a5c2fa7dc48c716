"""benchmarks/bench_losses.py: each cheaper part against what it replaced, from real calls."""

import pytest

from tests.helpers import run_cli


@pytest.mark.slow
def test_it_prints_each_pair_side_by_side():
    proc = run_cli("benchmarks/bench_losses.py", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("(")]
    assert [line[:3] for line in lines] == ["(a)", "(b)", "(c)", "(c)"]
    ratios = [float(line.rsplit(": ", 1)[1].split("x")[0]) for line in lines]
    assert all(0 < ratio < 10 for ratio in ratios), proc.stdout
