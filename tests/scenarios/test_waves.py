"""Waves: kept samples are committed while later seeds still wait for their first stage, the run can
stop when it has enough, and none of it depends on timing, kills, executors or worker counts."""
import shutil
import signal
import subprocess
import sys

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import given, strategies as st

from gra_stream.ids import content_id
from gra_stream.waves import GROWTH, LARGEST, MIN_FIRST, Scope, plan, wave_sizes
from tests.conftest import corpus, fake_config_file, gra, sql_rows
from tests.invariants import SMALL_WALK, check_run, final_state, segments, state, wait_for

WAVES = "[waves]\nfirst_seeds = 8\n"  # the 175 Self-Instruct seeds in waves of 8, 32, 43, 43, 49
SLOW = "batch_size = 8\ncpu_batch_size = 16\n"


def test_wave_sizes_start_small_grow_fourfold_and_stop_at_a_quarter_of_the_corpus():
    assert wave_sizes(1_000_000, 512) == [512, 2048, 8192, 32768, 131072, 250000, 250000, 325408]
    assert wave_sizes(175, 8) == [8, 32, 43, 43, 49], "a last wave under half the one before joins it"
    assert wave_sizes(8000, 512) == [512, 2048, 2048, 2048, 1344], "... or at four times the first wave"
    assert wave_sizes(175, 16) == [16, 64, 95]
    assert wave_sizes(500, 1024) == [125, 375], "a corpus under 4 x first_seeds starts with a quarter of it"
    assert wave_sizes(64, 512) == [16, 48]
    assert wave_sizes(24, 512) == [16, 8], "... but with at least 16 seeds"
    assert wave_sizes(16, 512) == [16]
    assert wave_sizes(50_000, 0) == [50_000], "first_seeds = 0: one wave per round"


@given(st.integers(1, 2_000_000), st.integers(0, 4096))
def test_wave_sizes_cover_the_corpus_start_with_the_first_wave_and_grow_within_their_cap(seeds, first):
    """For any corpus and `first_seeds`: the waves hold every seed once; the first is `first_seeds` (a
    quarter of a small corpus, at least MIN_FIRST) unless the rest would be under half of it; each wave
    before the last is GROWTH times the one before, up to the larger of LARGEST of the corpus and GROWTH
    times the first wave; the last is at least half of the one before it."""
    sizes = wave_sizes(seeds, first)
    assert sum(sizes) == seeds and min(sizes) > 0
    if first == 0:
        assert sizes == [seeds]
        return
    head = min(first, max(MIN_FIRST, -(-seeds // 4)))
    assert sizes[0] == (seeds if seeds - head < head // 2 else head)
    cap = max(head * GROWTH, int(seeds * LARGEST))
    regular = sizes[:-1]
    assert all(b == min(GROWTH * a, cap) for a, b in zip(regular, regular[1:]))
    if len(sizes) > 1:
        assert sizes[-1] >= sizes[-2] // 2


def test_the_waves_cut_the_seeds_by_id_into_exactly_those_sizes():
    con = duckdb.connect()
    ids = [content_id("seed", i) for i in range(1000)]
    con.execute("CREATE TABLE seeds AS SELECT unnest($1) AS id", [ids])
    waves = plan(con, 50)
    assert [w.through for w in waves] == [50, 250, 500, 750, 1000]
    assert waves[-1].below is None
    for wave in waves[:-1]:
        assert sum(i < wave.below for i in ids) == wave.through
    assert Scope(below=waves[0].below).seeds("s.id") == f"s.id < '{waves[0].below}'"
    assert Scope().seeds("s.id") == "TRUE"


def start(seeds, run_dir, config, *extra):
    return subprocess.Popen([sys.executable, "-m", "gra_stream", "run", str(seeds), "--run-dir", str(run_dir),
                             "--config", str(config), "--quiet", *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def seeds():
    return corpus("self_instruct_seed_tasks")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, seeds):
    """One uninterrupted run in waves, in this process's pace."""
    tmp = tmp_path_factory.mktemp("reference")
    config = fake_config_file(tmp, SLOW + WAVES, diversity=SMALL_WALK)
    gra("run", seeds, "--run-dir", tmp / "run", "--config", config, "--quiet", "--executor", "local")
    return tmp / "run"


def test_the_first_samples_are_queryable_before_later_waves_start_their_first_llm_stage(tmp_path, seeds):
    config = fake_config_file(tmp_path, SLOW + WAVES, latency_s=0.05, diversity=SMALL_WALK)
    run_dir = tmp_path / "run"
    proc = start(seeds, run_dir, config, "--executor", "local")
    try:
        wait_for(proc, lambda: segments(run_dir, "samples") >= 1, timeout=300)
        # from a second process, as a user watching the run would look
        seen = sql_rows(run_dir, "SELECT (SELECT count(*) FROM samples) AS samples, "
                                 "(SELECT count(*) FROM profiles) AS profiled, (SELECT count(*) FROM seeds) AS seeds")[0]
    finally:
        proc.communicate(timeout=600)
    assert proc.returncode == 0
    assert seen["samples"] > 0 and seen["profiled"] < seen["seeds"] / 2, seen
    check_run(run_dir)


def commits(run_dir, table):
    """(commit time, rows) of each segment of `table`: a segment's mtime is when it was written."""
    return [(p.stat().st_mtime, pq.read_table(p)) for p in (run_dir / table).glob("*.parquet")
            if p.name != "_empty.parquet"]


@pytest.mark.parametrize("overlap, profiled_ahead", [("true", True), ("false", False)])
def test_with_worker_processes_a_stage_works_on_one_wave_while_an_earlier_stage_takes_the_next(
        tmp_path, seeds, reference, overlap, profiled_ahead):
    """Passes overlap (gra_stream/passes.py): before the second wave's first samples are committed, the third
    wave has been profiled; one pass at a time, only the first two waves' 8 + 32 seeds are. The tables are
    the same."""
    config = fake_config_file(tmp_path, SLOW + WAVES + f"overlap = {overlap}\n", latency_s=0.05, diversity=SMALL_WALK)
    run_dir = tmp_path / "run"
    gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet", "--executor", "processes")
    first_wave_ends = sql_rows(  # the 9th seed by id: the first of the second wave
        run_dir, "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS k FROM seeds) WHERE k = 9")[0]["id"]
    second_wave_samples = min(t for t, rows in commits(run_dir, "samples")
                              if any(seed >= first_wave_ends for seed in rows["seed_id"].to_pylist()))
    profiled = sum(rows.num_rows for t, rows in commits(run_dir, "profiles") if t < second_wave_samples)
    assert (profiled > 8 + 32) == profiled_ahead and profiled >= 8 + 32, profiled
    assert state(run_dir) == state(reference)


@pytest.mark.parametrize("executor", ["local", "processes"])
def test_max_samples_stops_after_the_wave_that_reaches_it_and_a_run_without_it_goes_on(tmp_path, seeds, reference,
                                                                                        executor):
    config = fake_config_file(tmp_path, SLOW + WAVES, diversity=SMALL_WALK)
    run_dir = tmp_path / "run"
    stopped = gra("run", seeds, "--run-dir", run_dir, "--config", config, "--max-samples", 3, "--executor", executor)
    samples = sql_rows(run_dir, "SELECT count(*) AS n FROM samples")[0]["n"]
    total = sql_rows(reference, "SELECT count(*) AS n FROM samples")[0]["n"]
    assert 3 <= samples < total
    assert f"stopped with {samples} samples kept (--max-samples 3)" in stopped.stderr
    assert sql_rows(run_dir, "SELECT outcome FROM runs WHERE outcome <> 'running'") == [{"outcome": "stopped"}]
    again = gra("run", seeds, "--run-dir", run_dir, "--config", config, "--max-samples", 3, "--quiet")
    assert sql_rows(run_dir, "SELECT count(*) AS n FROM samples")[0]["n"] == samples, "enough already: no wave"
    assert "stopped with" in again.stderr
    gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet")
    assert state(run_dir) == state(reference)


# Points in different waves: the first wave's samples, later waves' profiles, generations and samples.
KILL_POINTS = [("samples", 1), ("profiles", 4), ("generations", 6), ("reviews", 9), ("samples", 2),
               ("profiles", 9), ("verdicts", 7), ("samples", 4)]


@pytest.mark.parametrize("executor", ["local", "processes"])
def test_sigkill_across_waves_then_resume_equals_an_uninterrupted_run(tmp_path, seeds, reference, executor):
    config = fake_config_file(tmp_path, SLOW + WAVES, latency_s=0.01, diversity=SMALL_WALK)
    run_dir = tmp_path / "run"
    kills = 0
    for table, target in KILL_POINTS:
        proc = start(seeds, run_dir, config, "--executor", executor)
        reached = wait_for(proc, lambda: segments(run_dir, table) >= target, timeout=300)
        if reached and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate()
    assert kills >= len(KILL_POINTS) - 2, f"only {kills} kills landed mid-run"
    gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet")
    assert final_state(run_dir) == final_state(reference) and state(run_dir) == state(reference)
    check_run(run_dir)


@pytest.mark.parametrize("executor, workers", [("processes", 1), ("processes", 2), ("ray", 2)])
def test_waves_give_the_same_tables_on_every_executor_and_worker_count(tmp_path, seeds, reference, executor, workers,
                                                                       request):
    config = fake_config_file(tmp_path, SLOW + WAVES + f"[processes]\nworkers = {workers}\n[ray]\nworkers = {workers}\n",
                              diversity=SMALL_WALK)
    ray = ["--ray-address", request.getfixturevalue("ray_cluster")] if executor == "ray" else []
    gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, "--quiet", "--executor", executor, *ray)
    assert state(tmp_path / "run") == state(reference)
    check_run(tmp_path / "run")


def test_one_wave_per_round_is_a_setting(tmp_path, seeds):
    """first_seeds = 0 runs each round as one wave (the paper's whole-round diversity walk): every stage
    makes one pass, so the progress shows one wave."""
    config = fake_config_file(tmp_path, SLOW + "[waves]\nfirst_seeds = 0\n", diversity=SMALL_WALK)
    out = gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config)
    assert "wave 1/1  175/175 seeds through every stage" in out.stderr


def test_a_run_that_goes_stage_by_stage_says_once_that_its_waves_are_through(tmp_path, seeds, reference):
    """After a tau change generation has nothing left to do, so the passes go stage by stage (the ordered
    diversity walk still one wave at a time): the progress gives one headline for the round, when its last
    wave is through, not one per wave that had work."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    config = fake_config_file(tmp_path, SLOW + WAVES + "[committee]\ntau = 6.0\n", diversity=SMALL_WALK)
    out = gra("run", seeds, "--run-dir", run_dir, "--config", config, "--executor", "local")
    assert "committee.tau 8.0 -> 6.0" in out.stderr, "the tables were re-decided"
    headlines = [line for line in out.stderr.splitlines() if line.startswith("wave ")]
    assert len(headlines) == 1 and headlines[0].startswith("wave 5/5  175/175 seeds through every stage"), headlines
