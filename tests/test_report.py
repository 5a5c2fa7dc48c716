"""`python -m world_models.report` end to end on the tiny real dataset (see conftest.py).

One report trains both cores for an epoch and evaluates them (~20 s); a second one takes those
runs with --runs and only evaluates them again.
"""

import json
import re
from pathlib import Path

import pytest

from world_models import report

TINY_TRAIN = ("trainer.max_epochs=1", "model.hidden_size=16")


@pytest.fixture(scope="module")
def made(run_cli, tiny_data, tmp_path_factory):
    """(out dir, run dirs by core, process) of a report that trained its own runs."""
    root = tmp_path_factory.mktemp("report")
    proc = run_cli("-m", "world_models.report", "--out", str(root / "reports"),
                   "--log-dir", str(root / "outputs"), "data=tiny", f"data.dir={tiny_data}",
                   "data.collect=false", *TINY_TRAIN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {p.parent.name: p.parent for p in (root / "outputs").rglob("results.json")}
    assert set(runs) == {"builtin", "scratch"}, runs
    return root / "reports", runs, proc


def table_rows(markdown: str) -> dict[str, list[str]]:
    """core -> the cells of its row of the results table."""
    rows = [line.strip("| ").split(" | ") for line in markdown.splitlines()
            if line.startswith("| builtin") or line.startswith("| scratch")]
    return {cells[0]: cells for cells in rows}


def check_report(out: Path, runs: dict[str, Path]) -> str:
    """REPORT.md holds every run's numbers as its files say, and every picture it links exists."""
    markdown = (out / "REPORT.md").read_text()
    rows = table_rows(markdown)
    assert set(rows) == set(runs)
    for core, run_dir in runs.items():
        results = json.loads((run_dir / "results.json").read_text())
        ar = json.loads((run_dir / "evaluate" / "summary.json").read_text())[
            "metrics"]["autoregressive"]["mse"]
        assert rows[core][:8] == [
            core, f"{results['parameters']:,}", "1", f"{results['train_frames_per_s']:.0f}",
            f"{results['test_mse']:.3g}", f"{results['baselines']['copy_last']:.3g}",
            f"{results['baselines']['mean_frame']:.3g}", f"{results['ratio_to_copy_last']:.2f}"]
        # Tiny test episodes have 30 steps: steps 50 and 150 lie beyond the horizon.
        assert rows[core][8:] == [f"{ar['step_1']:.3g}", f"{ar['step_10']:.3g}", "n/a", "n/a"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 1 + 2 * len(runs), links  # loss curves; a grid and a curve per run
    for link in links:
        assert (out / link).stat().st_size > 1000, link
    return markdown


def test_report_trains_evaluates_and_writes(made):
    out, runs, proc = made
    markdown = check_report(out, runs)
    for stage in ("train builtin", "train scratch", "evaluate builtin", "evaluate scratch"):
        assert re.search(f"Wall time, {stage}: \\d+ s", markdown), stage
    assert "CPUs" in markdown and "torch " in markdown  # which machine
    assert f"report: {out / 'REPORT.md'}" in proc.stdout


def test_report_takes_existing_runs(made, tmp_path):
    """In this process (its evaluate.py runs are processes of their own)."""
    _, runs, _ = made
    out = tmp_path / "reports"
    report.main(["--runs", f"{runs['scratch']},{runs['builtin']}", "--out", str(out)])
    markdown = check_report(out, runs)
    assert "train builtin (fit, from its results.json)" in markdown
    assert markdown.index("### scratch") < markdown.index("### builtin")  # in the order given


def test_refuses_what_it_cannot_use(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        report.main(["--runs", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --runs: '{tmp_path}' holds no results.json") and \
        err.count("\n") == 1
    with pytest.raises(SystemExit):
        report.main(["--runs", str(tmp_path), "model.hidden_size=16"])
    assert "drop model.hidden_size=16" in capsys.readouterr().err


def test_route_sends_data_to_both_and_rollout_to_evaluate_only():
    train, evaluate = report.route(["data=tiny", "data.dir=d", "data.collect=false",
                                    "trainer.max_epochs=1", "rollout.horizon=20", "split=val"])
    assert train == ["data=tiny", "data.dir=d", "data.collect=false", "trainer.max_epochs=1"]
    assert evaluate == ["data=tiny", "data.dir=d", "rollout.horizon=20", "split=val"]
