"""Collection with the real simulator: contents, reproducibility, shards, resume, bad input."""

import filecmp
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import ROOT, cli_env, compose_config, run_cli
from world_models.data import claims
from world_models.data.card import dataset_card
from world_models.data.collection import collect, collect_from_config
from world_models.data.episodes import episode_files, read_episode, write_episode
from world_models.data.recording import CollectSpec, downsample
from world_models.errors import UserError

TINY = ["data=tiny", "collect.workers=1"]


def spec(directory, **kw) -> CollectSpec:
    return CollectSpec(**{"dir": str(directory), "episode_steps": 12, "skip_frames": 5, **kw})


def same_files(a, b) -> bool:
    names_a = [p.name for p in episode_files(a)]
    names_b = [p.name for p in episode_files(b)]
    return names_a == names_b and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names_a)


def test_downsample_averages_blocks():
    frame = np.zeros((96, 96, 3), np.uint8)
    frame[:3, :3] = [90, 30, 3]  # one 3x3 block
    frame[3:6, 0] = 255  # a third of the next block
    small = downsample(frame, 32)
    assert small.shape == (32, 32, 3) and small.dtype == np.uint8
    assert small[0, 0].tolist() == [90, 30, 3]
    assert small[1, 0].tolist() == [85, 85, 85]


def test_cli_collects_tiny_dataset_with_card(tmp_path):
    out = tmp_path / "tiny"
    result = run_cli("-m", "world_models.collect", *TINY, f"data.dir={out}",
                  f"hydra.run.dir={tmp_path / 'log'}")
    assert result.returncode == 0, result.stderr
    files = episode_files(out)
    assert len(files) == 5
    for f in files:
        ep = read_episode(f)
        assert ep.frames.shape == (31, 32, 32, 3) and ep.frames.dtype == np.uint8
        assert ep.actions.shape == (30, 3)
        assert (ep.actions[:, 0] >= -1).all() and (ep.actions[:, 1:] >= 0).all()
        assert (ep.actions <= 1).all()
        assert ep.frames.std() > 10  # real pictures, not blank frames
    card = json.loads((out / "card.json").read_text())
    assert card["episodes"] == 5 and card["steps"] == 150 and card["copy_last_frame_mse"] > 0
    assert "dataset: 5 episodes, 150 steps" in result.stdout


def test_bytes_do_not_depend_on_workers_or_shards(tmp_path):
    one, two, merged = tmp_path / "one", tmp_path / "two", tmp_path / "merged"
    collect(spec(one), num_episodes=4, workers=1, progress=False)
    collect(spec(two), num_episodes=4, workers=2, progress=False)
    assert same_files(one, two)
    merged.mkdir()
    for shard in (0, 1):  # two "machines", merged by copying files
        part = tmp_path / f"shard{shard}"
        collect(spec(part), num_episodes=4, workers=1, shard=shard, num_shards=2, progress=False)
        assert len(episode_files(part)) == 2
        for f in episode_files(part):
            shutil.copy(f, merged / f.name)
    assert same_files(one, merged)


def test_seed_changes_the_data(tmp_path):
    collect(spec(tmp_path / "a"), num_episodes=1, workers=1, progress=False)
    collect(spec(tmp_path / "b", seed=1), num_episodes=1, workers=1, progress=False)
    a = read_episode(episode_files(tmp_path / "a")[0])
    b = read_episode(episode_files(tmp_path / "b")[0])
    assert not np.array_equal(a.actions, b.actions)


def test_interrupted_collection_resumes_to_the_same_dataset(tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    args = ["-m", "world_models.collect", "data=tiny", "data.num_episodes=6", "collect.workers=1",
            f"hydra.run.dir={tmp_path / 'log'}"]
    assert run_cli(*args, f"data.dir={full}").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, *args, f"data.dir={resumed}"],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(episode_files(resumed)) < 2:
        time.sleep(0.05)
    proc.kill()  # as hard an interruption as there is: no cleanup runs
    proc.wait()
    done = episode_files(resumed)
    assert 2 <= len(done) < 6, "the collection was not interrupted midway"
    for f in done:  # whatever a reader lists is complete
        read_episode(f)
    before = {f.name: f.stat().st_mtime_ns for f in done}
    result = run_cli(*args, f"data.dir={resumed}")
    assert result.returncode == 0, result.stderr
    assert f"({len(done)} already there)" in result.stdout
    assert {f.name: f.stat().st_mtime_ns for f in done} == before  # finished files untouched
    assert same_files(full, resumed)
    assert not list(resumed.glob(".*.tmp"))


def test_ctrl_c_says_in_one_line_what_is_kept_and_exits_130(tmp_path):
    data_dir = tmp_path / "d"
    # Episodes of 150 steps: seconds between the first file and the last, so that a loaded
    # machine cannot finish the collection before the interrupt arrives.
    args = ["-m", "world_models.collect", "data=tiny", "data.num_episodes=8", "collect.workers=2",
            "data.episode_steps=150", f"data.dir={data_dir}", f"hydra.run.dir={tmp_path / 'log'}"]
    # A session of its own, so the SIGINT goes to the whole process group as a terminal's does.
    # SIGINT at its default in the child, as under a terminal, whatever this process ignores.
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not episode_files(data_dir):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    kept = episode_files(data_dir)
    assert proc.returncode == 130, stderr[-3000:]
    assert 1 <= len(kept) < 8, "the collection was not interrupted midway"
    bar = f"collect {data_dir}:"  # the progress bar's redrawn lines
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(bar)]
    assert lines == [f"interrupted: {len(kept)} of 8 episodes are kept in '{data_dir}'; run the "
                     f"same command again to collect the other {8 - len(kept)}"], stderr[-3000:]
    assert not list(data_dir.glob(".*.tmp"))
    for f in kept:
        read_episode(f)
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"({len(kept)} already there)" in result.stdout


def test_two_collectors_in_one_directory_split_the_episodes(tmp_path):
    data_dir = tmp_path / "shared"
    args = ["-m", "world_models.collect", "data=tiny", "data.num_episodes=8", "collect.workers=1",
            f"data.dir={data_dir}"]
    procs = [subprocess.Popen([sys.executable, *args, f"hydra.run.dir={tmp_path / str(n)}"],
                              cwd=ROOT, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    recorded = [int(re.search(r"collected (\d+) episodes", out).group(1)) for out, _ in outputs]
    assert sum(recorded) == 8, recorded  # each episode recorded once, not once per collector
    assert len(episode_files(data_dir)) == 8
    for f in episode_files(data_dir):
        read_episode(f)
    assert not list(data_dir.glob(".*"))  # no claim or temporary file left


def test_a_claim_of_a_process_that_is_gone_is_taken_over(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    claim = tmp_path / ".episode_00000.claim"
    claim.write_text(f"{socket.gethostname()} {gone.pid}\n")
    stats = collect(spec(tmp_path), num_episodes=1, workers=1, progress=False)
    assert stats["recorded"] == 1 and len(episode_files(tmp_path)) == 1
    assert not claim.exists()


def test_a_claim_left_empty_is_taken_over_once_old(tmp_path):
    """A worker killed between creating its claim and writing its name into it leaves an empty
    claim: held while it may still be written, taken over once it is older than that (a rerun
    waited for it without end)."""
    claim = tmp_path / ".episode_00000.claim"
    claim.touch()
    assert claims.held(tmp_path, 0)  # just created: its writer may be about to fill it
    past = time.time() - claims.UNWRITTEN_AFTER - 1
    os.utime(claim, (past, past))
    assert not claims.held(tmp_path, 0)
    stats = collect(spec(tmp_path), num_episodes=1, workers=1, progress=False)
    assert stats["recorded"] == 1 and len(episode_files(tmp_path)) == 1
    assert not claim.exists()


def test_stock_and_fast_env_write_identical_episodes(tmp_path):
    collect(spec(tmp_path / "fast"), num_episodes=1, workers=1, progress=False)
    collect(spec(tmp_path / "stock", env="stock"), num_episodes=1, workers=1, progress=False)
    assert same_files(tmp_path / "fast", tmp_path / "stock")


def test_card_counts_motion(tmp_path):
    frames = np.zeros((4, 2, 2, 3), np.uint8)
    frames[2:] = 255  # one change of 1.0 on every pixel, two unchanged steps
    write_episode(tmp_path / "e.npz", frames, np.zeros((3, 3)), np.zeros(3))
    card = dataset_card(tmp_path)
    assert card["steps"] == 3
    assert card["copy_last_frame_mse"] == pytest.approx(1 / 3)
    assert card["unchanged_fraction"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "override, message",
    [
        ("policy.name=nope",
         "policy.name: unknown policy 'nope'; available: brownian, uniform, phases, slalom, "
         "pilot, mix"),
        ("data.resolution=40", "data.resolution: expected a divisor of 96"),
        ("collect.env=nope", "collect.env: expected one of 'fast', 'stock'"),
        ("collect.shard=2", "collect.shard: expected 0 <= shard < num_shards=1"),
        ("data.num_episodes=0", "data.num_episodes: expected >= 1"),
        ("seed=abc", "seed: expected an integer, got 'abc'"),
        ("data.episode_steps=1.5", "data.episode_steps: expected an integer, got '1.5'"),
    ],
)
def test_bad_collect_settings_are_refused_naming_the_key(tmp_path, override, message):
    """The real collect.yaml composed in this process; nothing is collected."""
    cfg = compose_config("collect", *TINY, f"data.dir={tmp_path / 'd'}", override)
    with pytest.raises(UserError) as err:
        collect_from_config(cfg, progress=False)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not list(tmp_path.rglob("*.npz"))


@pytest.mark.parametrize("override, message", [
    ("policy=nope", "error: In 'collect': Could not find 'policy/nope'; Available options in "
                    "'policy': brownian, diverse, mix, mix_pilot, phases, pilot, slalom, uniform"),
    ("seed=abc", "error: seed: expected an integer, got 'abc'"),
])
def test_bad_collect_settings_exit_with_one_line(tmp_path, override, message):
    result = run_cli("-m", "world_models.collect", *TINY, f"data.dir={tmp_path / 'd'}", override,
                     f"hydra.run.dir={tmp_path / 'log'}")
    assert result.returncode == 2
    assert [ln for ln in result.stderr.splitlines() if ln.strip()] == [message]
    assert "Traceback" not in result.stderr + result.stdout


def test_other_resolution_in_the_same_directory_is_refused_untouched(tmp_path):
    collect(spec(tmp_path), num_episodes=1, workers=1, progress=False)
    before = {f.name: f.read_bytes() for f in episode_files(tmp_path)}
    with pytest.raises(UserError, match="was collected with data.resolution=32 but this command "
                                        "asks for 48"):
        collect(spec(tmp_path, resolution=48), num_episodes=2, workers=1, progress=False)
    (tmp_path / "card.json").unlink()  # episodes from elsewhere: their frames still tell
    with pytest.raises(UserError, match="holds 32x32 episodes but data.resolution=48"):
        collect(spec(tmp_path, resolution=48), num_episodes=2, workers=1, progress=False)
    assert {f.name: f.read_bytes() for f in episode_files(tmp_path)} == before


@pytest.mark.parametrize("change, message", [
    ({"episode_steps": 13}, "data.episode_steps: '{dir}' was collected with "
                            "data.episode_steps=12 but this command asks for 13"),
    ({"skip_frames": 6}, "data.skip_frames: '{dir}' was collected with data.skip_frames=5 but"),
    ({"seed": 1}, "data.seed: '{dir}' was collected with data.seed=0 but this command asks for 1"),
    ({"policy": {"name": "uniform"}}, "policy.name: '{dir}' was collected with "
                                      'policy.name="brownian" but this command asks for "uniform"'),
    ({"policy": {"name": "brownian", "sigma": [0.3, 0.1, 0.01]}},
     "policy.sigma: '{dir}' was collected with policy.sigma=null but this command asks for "
     "[0.3, 0.1, 0.01]"),
    ({"policy": {"name": "mix", "components": [{"name": "phases"}]}},
     "policy.name: '{dir}' was collected with policy.name=\"brownian\" but this command asks "
     "for \"mix\""),
], ids=["episode_steps", "skip_frames", "seed", "policy.name", "policy.sigma", "policy mix"])
def test_settings_the_dataset_was_not_collected_with_are_refused(tmp_path, change, message):
    collect(spec(tmp_path), num_episodes=1, workers=1, progress=False)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    with pytest.raises(UserError) as err:
        collect(spec(tmp_path, **change), num_episodes=2, workers=1, progress=False)
    assert str(err.value).startswith(message.format(dir=tmp_path)), str(err.value)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before


def test_more_episodes_collect_just_the_missing_ones_and_fewer_are_refused(tmp_path):
    collect(spec(tmp_path / "all"), num_episodes=3, workers=1, progress=False)
    first = collect(spec(tmp_path / "grown"), num_episodes=2, workers=1, progress=False)
    grown = collect(spec(tmp_path / "grown"), num_episodes=3, workers=1, progress=False)
    assert (first["recorded"], grown["recorded"], grown["skipped"]) == (2, 1, 2)
    assert same_files(tmp_path / "all", tmp_path / "grown")
    with pytest.raises(UserError, match="data.num_episodes: .* holds 3 episodes but this command "
                                        "asks for 2; set data.num_episodes=3"):
        collect(spec(tmp_path / "grown"), num_episodes=2, workers=1, progress=False)


def test_cli_refuses_a_setting_the_dataset_was_not_collected_with(tiny_data, tmp_path):
    result = run_cli("-m", "world_models.collect", "data=tiny", "policy=brownian",
                     f"data.dir={tiny_data}", "data.episode_steps=40",
                     f"hydra.run.dir={tmp_path / 'log'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip() == (
        f"error: data.episode_steps: '{tiny_data}' was collected with data.episode_steps=30 but "
        f"this command asks for 40; set it back or choose another data.dir")
