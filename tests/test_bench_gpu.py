"""benchmarks/bench_gpu.py: a clear skip line without a GPU, and its measurement code on CPU."""

import pytest

from tests.helpers import run_cli


def test_without_a_gpu_it_says_so_and_exits_0():
    proc = run_cli("benchmarks/bench_gpu.py", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "bench_gpu: no GPU, skipped (torch.cuda.is_available() is False)"


@pytest.mark.slow
def test_on_cpu_it_measures_both_precisions():
    proc = run_cli("benchmarks/bench_gpu.py", "--device", "cpu", "--steps", "1", "--batches", "2",
                   "--no-compile", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines()[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("2", "fp32", "False"), ("2", "bf16", "False")]
    assert all(float(r[3].replace(",", "")) > 0 for r in rows)
