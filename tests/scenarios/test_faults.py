"""Disk faults: a full disk and a read-only run directory stop the run with a clear error and leave
it resumable. Uses a small tmpfs, so it needs permission to mount (root); skipped elsewhere."""
import subprocess
import time
import uuid

import pytest

from tests.conftest import fake_config_file, gra, corpus, sql_rows
from tests.invariants import check_run


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", f"gra-{uuid.uuid4().hex[:8]}", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def remount(mount, options):
    """Remount, waiting up to 5 s for every process of a finished run to let go of its files: a run on worker
    processes has helper processes (multiprocessing's) that may outlive the command by a moment, and a
    read-only remount fails while any file is open for writing."""
    for _ in range(50):
        if not subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], capture_output=True).returncode:
            return
        time.sleep(0.1)
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def test_full_disk_stops_cleanly_and_the_run_resumes(small_disk, tmp_path):
    seeds = corpus("self_instruct_seed_tasks")
    config = fake_config_file(tmp_path, "batch_size = 8\n")
    reference = tmp_path / "reference"
    gra("run", seeds, "--run-dir", reference, "--config", config, "--quiet")
    run_dir = small_disk / "run"
    full = gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet", check=False)
    assert full.returncode == 1, full.stderr
    assert "No space left on device" in full.stderr and "run the same command again" in full.stderr
    assert "Traceback" not in full.stderr
    assert not list(run_dir.rglob(".*.tmp")), "a half-written segment was left behind"
    remount(small_disk, "size=64m")
    gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet")
    query = "SELECT id, decided_by FROM samples ORDER BY id"
    assert sql_rows(run_dir, query) == sql_rows(reference, query)
    check_run(run_dir)


def test_read_only_run_directory_is_a_clear_error(small_disk, tmp_path):
    seeds = corpus("self_instruct_seed_tasks")
    config = fake_config_file(tmp_path)
    remount(small_disk, "size=64m")
    run_dir = small_disk / "run"
    gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet")
    more = tmp_path / "more.jsonl"
    more.write_text('{"instruction": "Name a prime number above 100.", "output": "101 is prime."}\n')
    remount(small_disk, "ro")
    refused = gra("run", seeds, more, "--run-dir", run_dir, "--config", config, "--quiet", check=False)
    assert refused.returncode == 1 and "Read-only file system" in refused.stderr and "Traceback" not in refused.stderr
    assert sql_rows(run_dir, "SELECT count(*) AS n FROM seeds") == [{"n": 175}], "sql must still read it"
    remount(small_disk, "rw")
    gra("run", seeds, more, "--run-dir", run_dir, "--config", config, "--quiet")
    assert sql_rows(run_dir, "SELECT count(*) AS n FROM seeds") == [{"n": 176}]
