"""`--executor processes`: same outputs as the local executor, batches really in worker processes, kill-safe."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
from threadpoolctl import threadpool_info, threadpool_limits

from gra_stream.executors import open_context
from gra_stream.executors.processes import ProcessExecutor
from gra_stream.stages import Stage
from gra_stream.store import Store
from tests.conftest import fake_config, fake_config_file, gra, head_jsonl, corpus
from tests.invariants import KEYED_TABLES, SMALL_BATCHES, SMALL_WALK, check_run, reach, segments, state

# small gate and diversity batches too, so that workers prepare several of them ahead of the ordered finish
WORKERS = SMALL_BATCHES + "[processes]\nworkers = 2\n[dedup]\nbatch_size = 16\n"


def start(seeds, run_dir, config):
    return subprocess.Popen([sys.executable, "-m", "gra_stream", "run", str(seeds), "--run-dir", str(run_dir),
                             "--config", str(config), "--quiet", "--executor", "processes"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state_field = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state_field != "Z"


def test_a_processes_run_decides_exactly_what_a_local_run_decides(tmp_path):
    seeds = head_jsonl(corpus("self_instruct_seed_tasks"), tmp_path / "seeds.jsonl", 60)
    config = fake_config_file(tmp_path, WORKERS, diversity=SMALL_WALK)
    gra("run", seeds, "--run-dir", tmp_path / "local", "--config", config, "--quiet", "--executor", "local")
    gra("run", seeds, "--run-dir", tmp_path / "procs", "--config", config, "--quiet", "--executor", "processes")
    local, in_processes = state(tmp_path / "local"), state(tmp_path / "procs")
    assert in_processes == local
    assert len(local["samples"]) > 0 and len(local["generations"]) > 60  # two rounds
    assert segments(tmp_path / "procs", "gates") >= 4  # the gate's finish ran over several prepared batches
    check_run(tmp_path / "procs")
    again = gra("run", seeds, "--run-dir", tmp_path / "procs", "--config", config, "--executor", "processes")
    assert "nothing to do" in again.stderr


def test_a_stopped_then_killed_processes_run_resumes_to_the_local_result(tmp_path):
    seeds = head_jsonl(corpus("self_instruct_seed_tasks"), tmp_path / "seeds.jsonl", 60)
    # the diversity filter's cell index too: its centroids and sidecars are written as the run goes (one
    # cell: 60 seeds are too few to train more, 39 rows each)
    config = fake_config_file(tmp_path, WORKERS, latency_s=0.05, diversity=SMALL_WALK + 'index = "ivf"\ncells = 1\nprobes = 1\n')
    gra("run", seeds, "--run-dir", tmp_path / "local", "--config", config, "--quiet", "--executor", "local")
    run_dir = tmp_path / "procs"

    proc = start(seeds, run_dir, config)  # SIGTERM: stops at a batch boundary
    reach(proc, lambda: segments(run_dir, "profiles") >= 2, timeout=300)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "run the same command again to resume" in err and "Traceback" not in err

    proc = start(seeds, run_dir, config)  # SIGKILL: the runner dies mid-stage, its workers with it
    reach(proc, lambda: segments(run_dir, "reviews") >= 2, timeout=300)
    workers = children(proc.pid)
    assert len(workers) >= 2  # the batches run in worker processes
    proc.kill()
    proc.communicate()
    committed = {t: segments(run_dir, t) for t in KEYED_TABLES}
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [w for w in workers if alive(w)], "worker processes outlived the killed runner"
    assert {t: segments(run_dir, t) for t in KEYED_TABLES} == committed  # only the runner commits

    gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet", "--executor", "processes")
    assert state(run_dir) == state(tmp_path / "local")
    assert list((run_dir / ".index" / "diversity").glob("centroids-*.npy"))
    check_run(run_dir)


def test_a_mistake_found_in_a_worker_reads_as_one_line(tmp_path):
    seeds = head_jsonl(corpus("self_instruct_seed_tasks"), tmp_path / "seeds.jsonl", 5)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[[models]]\nname = "m"\npath = "embedded:nope"\n[diversity]\nmodel = "hashing"\n')
    result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config", unknown, "--executor", "processes",
                 check=False, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "unknown embedded model" in result.stderr
    assert os.listdir(tmp_path / "run" / "profiles") == ["_empty.parquet"]


def _as_is(batch, ctx):
    return batch


def test_the_runner_finishes_ordered_batches_on_one_blas_thread_while_the_workers_prepare(tmp_path):
    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    seen = []

    def finish(batch, ctx):
        seen.append(blas_threads())
        return batch

    store = Store(tmp_path / "run")
    store.init()
    config = fake_config(processes={"workers": 2})
    stage = Stage("t", "gates", ("id",), lambda config, scope=None: "", _as_is, ordered=True, prepare=_as_is,
                  finish=finish)
    batches = (pl.DataFrame({"id": [f"r{i}-{j}" for j in range(3)]}) for i in range(6))
    executor = ProcessExecutor(store.root, config)
    with threadpool_limits(limits=2, user_api="blas"):
        try:
            finished = list(executor.map(stage, batches, open_context(store, config), SimpleNamespace(raised=False)))
        finally:
            executor.close()
        assert blas_threads() and set(blas_threads()) == {2}  # given back once the stage is through
    assert [ids for ids, _ in finished] == [[f"r{i}-{j}" for j in range(3)] for i in range(6)]  # in order
    assert seen == [[1] * len(seen[0])] * 6


def test_a_batch_travels_to_a_worker_as_its_own_rows_only():
    """A batch is a slice of the pending rows' large record batches: sent as IPC bytes, it carries its own
    rows, where a pickled Arrow slice of a list column carried its whole parent."""
    import io

    from gra_stream.executors import batch_ipc

    pending = pl.DataFrame({"id": [f"{i:016x}" for i in range(65536)], "reviewers": [["fake-a", "fake-b"]] * 65536})
    batch = pending.slice(4096, 1024)
    alone = pl.DataFrame({"id": batch["id"].to_list(), "reviewers": batch["reviewers"].to_list()})  # shares no buffer
    sent = batch_ipc(batch)
    assert pl.read_ipc(io.BytesIO(sent)).equals(alone)
    assert len(sent) < 2 * len(batch_ipc(alone)) + 4096


def test_a_worker_starts_loading_minilm_as_it_starts_and_only_for_minilm(tmp_path, monkeypatch):
    """`warm_worker`, a worker's first task, returns once its context is open and loads the diversity
    filter's model on a thread of its own: a small corpus's seeds are embedded in one batch, by one worker,
    and the first wave's filter batch, which may land on another, then does not wait seconds for a load.
    Not when the filter reads its embeddings back from a kept version (a config change): there most
    batches embed nothing, and the model loads when one first does."""
    from gra_stream import carry, embeddings
    from gra_stream.executors import LOADING_THREAD, close_worker_contexts, warm_worker

    made = []
    monkeypatch.setattr(embeddings, "MiniLMEmbedder", lambda: made.append(threading.current_thread()) or object())
    embeddings._embedder.cache_clear()
    try:
        for model, kept, loads in ((embeddings.HASHING, {}, 0), (embeddings.MINILM, {"diversity": "v1"}, 0),
                                   (embeddings.MINILM, {}, 1)):
            monkeypatch.setattr(carry, "reusable", lambda store, config: dict(kept))
            run_dir = tmp_path / f"{model.replace(':', '_')}-{len(kept)}"
            Store(run_dir).init()
            warm_worker(str(run_dir), fake_config(diversity={"model": model}), os.getcwd())
            for thread in threading.enumerate():
                if thread.name == LOADING_THREAD:
                    thread.join(timeout=10)
            assert len(made) == loads, model
        assert made[0] is not threading.main_thread()
    finally:
        close_worker_contexts()
        embeddings._embedder.cache_clear()
