"""Crash safety with real processes: SIGKILL at many points, SIGTERM, SQL while writing, the run lock."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import fake_config_file, gra, corpus, sql_rows
from tests.invariants import SMALL_WALK, check_run, final_state, segments, wait_for

SLOW = "batch_size = 8\ncpu_batch_size = 16\n"
def start(seeds, run_dir, config):
    """The run in this process's pace: one batch at a time (worker processes: tests/test_process_executor.py)."""
    return subprocess.Popen([sys.executable, "-m", "gra_stream", "run", str(seeds), "--run-dir", str(run_dir),
                             "--config", str(config), "--quiet", "--executor", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return corpus("self_instruct_seed_tasks")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, seeds):
    tmp = tmp_path_factory.mktemp("reference")
    config = fake_config_file(tmp, SLOW, diversity=SMALL_WALK)
    gra("run", seeds, "--run-dir", tmp / "run", "--config", config, "--quiet")
    return final_state(tmp / "run")


KILL_POINTS = [("seeds", 1), ("profiles", 1), ("profiles", 9), ("generations", 2), ("generations", 14),
               ("gates", 1), ("reviews", 1), ("reviews", 6), ("verdicts", 3), ("adjudications", 1), ("samples", 1)]


def test_sigkill_at_many_points_then_resume_equals_an_uninterrupted_run(tmp_path, seeds, reference):
    config = fake_config_file(tmp_path, SLOW, latency_s=0.01, diversity=SMALL_WALK)
    run_dir = tmp_path / "run"
    kills = 0
    for table, target in KILL_POINTS:
        proc = start(seeds, run_dir, config)
        reached = wait_for(proc, lambda: segments(run_dir, table) >= target)
        if reached and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
    assert kills >= len(KILL_POINTS) - 2, f"only {kills} kills landed mid-run"
    stale = run_dir / ".tmp" / "pending-review-4194304.arrow"  # as a kill mid-stage leaves it
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"not read")
    gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet")
    assert final_state(run_dir) == reference
    assert not list((run_dir / ".tmp").glob("pending-*.arrow"))  # the next run removes what a kill left
    check_run(run_dir)


def test_sigterm_stops_at_a_batch_boundary_and_says_how_to_resume(tmp_path, seeds, reference):
    config = fake_config_file(tmp_path, SLOW, latency_s=0.02, diversity=SMALL_WALK)
    run_dir = tmp_path / "run"
    proc = start(seeds, run_dir, config)
    wait_for(proc, lambda: segments(run_dir, "generations") >= 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to resume" in err and "Traceback" not in err
    assert sql_rows(run_dir, "SELECT outcome FROM runs WHERE outcome <> 'running'") == [{"outcome": "interrupted"}]
    gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet")
    assert final_state(run_dir) == reference


def test_sql_and_status_work_while_a_run_writes_and_a_second_run_is_refused(tmp_path, seeds):
    config = fake_config_file(tmp_path, SLOW, latency_s=0.02, diversity=SMALL_WALK)
    run_dir = tmp_path / "run"
    proc = start(seeds, run_dir, config)
    try:
        wait_for(proc, lambda: segments(run_dir, "profiles") >= 1)
        counts = []  # rows of every stage so far: the 175 seeds may all be profiled before the first look
        written = " + ".join(f"(SELECT count(*) FROM {t})" for t in ("profiles", "generations", "gates", "reviews",
                                                                    "verdicts", "diversity", "samples"))
        while proc.poll() is None and len(counts) < 15:
            counts.append(sql_rows(run_dir, f"SELECT {written} AS n")[0]["n"])
            gra("status", run_dir, "--json")
        assert counts == sorted(counts) and counts[-1] > counts[0] > 0, counts
        second = gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet", check=False)
        if proc.poll() is None:
            assert second.returncode != 0 and "in use by another gra-stream run" in second.stderr
            assert "Traceback" not in second.stderr
    finally:
        proc.communicate(timeout=300)
    assert proc.returncode == 0


def test_a_crashed_run_does_not_leave_the_lock_stuck(tmp_path, seeds, reference):
    config = fake_config_file(tmp_path, SLOW, latency_s=0.02, diversity=SMALL_WALK)
    run_dir = tmp_path / "run"
    proc = start(seeds, run_dir, config)
    wait_for(proc, lambda: segments(run_dir, "profiles") >= 1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert (run_dir / ".lock").exists()
    gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet")
    assert final_state(run_dir) == reference


def test_fifty_seeded_random_kill_points(tmp_path, seeds, reference):
    """Kill the run at pseudo-random moments (fixed seed; GRA_KILL_POINTS for more), resuming each time;
    when a run gets to its end first, it is checked and a fresh one takes the remaining kills. Every
    run's final tables must equal an uninterrupted run's."""
    import random

    rng = random.Random(20261124)
    wanted = int(os.environ.get("GRA_KILL_POINTS", "50"))
    config = fake_config_file(tmp_path, SLOW, latency_s=0.06, diversity=SMALL_WALK)
    landed, campaign = 0, 0
    while landed < wanted:
        campaign += 1
        run_dir = tmp_path / f"run{campaign}"
        landed_here = 0
        while landed < wanted:
            before = sum(segments(run_dir, t) for t in FINAL_TABLES_FOLDERS)
            proc = start(seeds, run_dir, config)
            # wait for this process to commit something (so it is past start-up), then a random extra delay
            if wait_for(proc, lambda: sum(segments(run_dir, t) for t in FINAL_TABLES_FOLDERS) > before):
                time.sleep(rng.uniform(0.0, 0.25))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                landed += 1
                landed_here += 1
            proc.communicate()
            if proc.returncode == 0:
                break  # this run reached its end before the kill
        assert landed_here > 0 and campaign < 10, "kills stopped landing"
        gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet")
        assert final_state(run_dir) == reference, f"run {campaign} after {landed_here} kills"
        check_run(run_dir)


FINAL_TABLES_FOLDERS = ["seeds", "profiles", "generations", "gates", "reviews", "verdicts", "adjudications", "samples"]
