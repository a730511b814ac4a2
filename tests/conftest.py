import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gra_stream.config import config_from_dict
from gra_stream.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
FAKE_POOL = [{"name": f"fake-{c}", "backend": "fake"} for c in "abcde"]


@pytest.fixture(autouse=True)
def _cwd_stays_put():
    """A test that moves the pytest process elsewhere (a worker context chdirs to the cwd it is given)
    fails itself, rather than a later test that runs a child from the repository."""
    cwd = os.getcwd()
    yield
    assert os.getcwd() == cwd, f"the test left the process in {os.getcwd()}"


def corpus(name: str) -> Path:
    """A public corpus by name: the repository's data/seeds (data/README.md) or, for the benchmark test
    sets, the copy shipped inside the package."""
    from gra_stream.resources import REFERENCES, reference_path

    path = reference_path(name) if name in REFERENCES else ROOT / "data" / "seeds" / f"{name}.jsonl.gz"
    assert path.exists(), f"{path} is part of the repository"
    return path


def read_jsonl(path: Path, n: int | None = None) -> list[dict]:
    """The first `n` records (all when None) of a JSONL file, gzipped or not."""
    rows = []
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
        for line in f:
            if n is not None and len(rows) >= n:
                break
            rows.append(json.loads(line))
    return rows


def fake_config(**overrides):
    return config_from_dict({"models": FAKE_POOL, "diversity": {"model": "hashing"}, **overrides}, source="<test>")


class Said(Progress):
    """Progress that keeps what the run says, quiet or not."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lines: list[str] = []

    def say(self, message, **kwargs):
        self.lines.append(message)


def run_fake(seeds, run_dir, **overrides):
    """The whole pipeline in-process with the five-model fake pool."""
    from gra_stream.progress import Progress
    from gra_stream.runner import run_pipeline

    return run_pipeline(list(seeds), run_dir, fake_config(**overrides), progress=Progress(quiet=True))


def frame(run_dir, sql):
    """A query over a run directory, as a Polars frame."""
    from gra_stream.store import Store

    return Store(run_dir).connect().sql(sql).pl()


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def fake_config_file(tmp_path: Path, extra: str = "", latency_s: float = 0.0, diversity: str = "") -> Path:
    models = "".join(f'[[models]]\nname = "{m["name"]}"\nbackend = "fake"\nlatency_s = {latency_s}\n' for m in FAKE_POOL)
    return write_toml(tmp_path / "fake.toml", extra + "\n" + models + '[diversity]\nmodel = "hashing"\n' + diversity)


def gra(*args, check=True, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess."""
    return _child([sys.executable, "-m", "gra_stream", *map(str, args)], check, timeout, **kwargs)


def python_child(code: str, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """Python code in a fresh process started from the repository, so that it can import `tests.*`;
    a failure shows the child's stderr."""
    return _child([sys.executable, "-c", code], True, timeout, cwd=ROOT, **kwargs)


def _child(cmd: list, check: bool, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return result


def sql_rows(run_dir: Path, query: str) -> list[dict]:
    return json.loads(gra("sql", run_dir, query, "--format", "json").stdout)


def head_jsonl(src: Path, dst: Path, n: int) -> Path:
    """The first `n` lines of `src` (gzipped or not) as a plain JSONL file."""
    with (gzip.open if src.suffix == ".gz" else open)(src, "rt", encoding="utf-8") as f, \
            open(dst, "w", encoding="utf-8") as out:
        for i, line in enumerate(f):
            if i >= n:
                break
            out.write(line)
    return dst


@pytest.fixture
def small_cells(monkeypatch):
    """The diversity filter's cells scaled down, so that a few hundred references get cells of their own
    (and the kept samples' are trained again as they grow) within a test-sized run."""
    from gra_stream import vector_index

    for name, value in (("MIN_ROWS_PER_CELL", 2), ("ROWS_PER_CELL", 4), ("MIN_ROWS_PER_GROWN_CELL", 2)):
        monkeypatch.setattr(vector_index, name, value)


@pytest.fixture
def sample_dir(tmp_path):
    dst = tmp_path / "sample"
    shutil.copytree(SAMPLE, dst)
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster():
    """A local two-CPU Ray cluster started with `ray start`, as a user would; its address. It is stopped
    alone (`stop_ray_cluster`): `ray stop` would stop every Ray cluster on the machine, a user's too."""
    ray = Path(sys.executable).parent / "ray"
    port = free_port()
    temp = tempfile.mkdtemp(prefix="gra-ray-")  # short: Ray's socket paths must fit in 107 characters
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # loopback only
    try:
        subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--num-gpus", "0", "--port", str(port),
                        "--include-dashboard", "false", "--object-store-memory", str(512 * 2**20),
                        "--disable-usage-stats", "--temp-dir", temp], check=True, capture_output=True, env=env, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        stop_ray_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def stop_ray_cluster(temp: str) -> None:
    """Kill the processes of the cluster whose temp folder is `temp` (its GCS, raylet and agents name it on
    their command lines) and everything they started (workers rename themselves, so they are found as
    children)."""
    import psutil

    ours = {}
    for process in psutil.process_iter(["cmdline"]):
        if any(temp in part for part in process.info["cmdline"] or []):
            ours[process.pid] = process
            try:
                ours.update({child.pid: child for child in process.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
    for process in ours.values():
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(ours.values()), timeout=30)
