"""`--executor ray` on a local two-CPU Ray cluster: same outputs as the local executor, kill-safe, optional."""
import signal
import subprocess
import sys
import time

from tests.conftest import fake_config_file, gra, head_jsonl, corpus, python_child, sql_rows
from tests.invariants import KEYED_TABLES, SMALL_BATCHES, SMALL_WALK, check_run, reach, segments, state

def start(seeds, run_dir, config, address):
    return subprocess.Popen([sys.executable, "-m", "gra_stream", "run", str(seeds), "--run-dir", str(run_dir),
                             "--config", str(config), "--quiet", "--executor", "ray", "--ray-address", address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ray_run_decides_exactly_what_a_local_run_decides(tmp_path, ray_cluster):
    seeds = head_jsonl(corpus("self_instruct_seed_tasks"), tmp_path / "seeds.jsonl", 60)
    config = fake_config_file(tmp_path, SMALL_BATCHES, diversity=SMALL_WALK)
    gra("run", seeds, "--run-dir", tmp_path / "local", "--config", config, "--quiet", "--executor", "local")
    gra("run", seeds, "--run-dir", tmp_path / "ray", "--config", config, "--quiet", "--executor", "ray",
        "--ray-address", ray_cluster)
    local, on_ray = state(tmp_path / "local"), state(tmp_path / "ray")
    assert on_ray == local
    assert len(local["samples"]) > 0 and len(local["generations"]) > 60  # two rounds, several batches per stage
    check_run(tmp_path / "ray")
    # the batches really ran in Ray workers: the LLM stages' batches are spread over two actors' processes
    for fmt in ("jsonl", "alpaca"):
        gra("export", tmp_path / "local", "--format", fmt, "-o", tmp_path / f"local.{fmt}")
        gra("export", tmp_path / "ray", "--format", fmt, "-o", tmp_path / f"ray.{fmt}")
        assert (tmp_path / f"ray.{fmt}").read_bytes() == (tmp_path / f"local.{fmt}").read_bytes()
    again = gra("run", seeds, "--run-dir", tmp_path / "ray", "--config", config, "--executor", "ray",
                "--ray-address", ray_cluster)
    assert "nothing to do" in again.stderr


def test_a_stopped_then_killed_ray_run_resumes_to_the_local_result(tmp_path, ray_cluster):
    seeds = head_jsonl(corpus("self_instruct_seed_tasks"), tmp_path / "seeds.jsonl", 60)
    config = fake_config_file(tmp_path, SMALL_BATCHES, latency_s=0.05, diversity=SMALL_WALK)
    gra("run", seeds, "--run-dir", tmp_path / "local", "--config", config, "--quiet", "--executor", "local")
    run_dir = tmp_path / "ray"

    proc = start(seeds, run_dir, config, ray_cluster)  # SIGTERM: stops at a batch boundary
    reach(proc, lambda: segments(run_dir, "profiles") >= 2, timeout=300)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "run the same command again to resume" in err and "Traceback" not in err

    proc = start(seeds, run_dir, config, ray_cluster)  # SIGKILL: the driver dies mid-stage
    reach(proc, lambda: segments(run_dir, "reviews") >= 2, timeout=300)
    proc.kill()
    proc.communicate()
    committed = {t: segments(run_dir, t) for t in KEYED_TABLES}
    time.sleep(3)  # workers die with their driver, and only the driver commits: nothing lands afterwards
    assert {t: segments(run_dir, t) for t in KEYED_TABLES} == committed

    gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet", "--executor", "ray",
        "--ray-address", ray_cluster)
    assert state(run_dir) == state(tmp_path / "local")
    check_run(run_dir)


def test_the_local_executor_never_imports_ray(tmp_path):
    seeds = head_jsonl(corpus("self_instruct_seed_tasks"), tmp_path / "seeds.jsonl", 5)
    code = ("import sys; from pathlib import Path; from tests.conftest import run_fake; "
            f"run_fake([Path({str(seeds)!r})], Path({str(tmp_path / 'run')!r})); "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    assert python_child(code, timeout=300).stdout.strip() == "[]"
    assert sql_rows(tmp_path / "run", "SELECT count(*) AS n FROM seeds") == [{"n": 5}]


def test_ray_executor_errors_are_one_line(tmp_path, ray_cluster):
    seeds = head_jsonl(corpus("self_instruct_seed_tasks"), tmp_path / "seeds.jsonl", 5)
    config = fake_config_file(tmp_path)
    result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, "--executor", "ray",
                 "--ray-address", "127.0.0.1:1", check=False, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Ray cluster at 127.0.0.1:1" in result.stderr
    result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, "--ray-address", "x:1", check=False)
    assert result.returncode == 2 and "--ray-address needs --executor ray" in result.stderr
    # a mistake found inside a worker (here: loading the model) still reads as one line
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[[models]]\nname = "m"\npath = "embedded:nope"\n[diversity]\nmodel = "hashing"\n')
    result = gra("run", seeds, "--run-dir", tmp_path / "run2", "--config", unknown, "--executor", "ray",
                 "--ray-address", ray_cluster, check=False, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "unknown embedded model 'embedded:nope'" in result.stderr or "unknown embedded model 'nope'" in result.stderr
