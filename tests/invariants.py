"""Checks over run directories, shared by the module tests and the scenarios: consistency of a finished
run, the tables whose equality means "the same run", and waiting on a run in another process."""
import time

from gra_stream.store import Store
from tests.conftest import sql_rows

KEYED_TABLES = ["seeds", "profiles", "generations", "gates", "reviews", "verdicts", "adjudications", "diversity",
                "annotations", "samples"]

ORPHANS = {
    "profile without seed": "SELECT id FROM profiles ANTI JOIN seeds USING (id)",
    "generation without profiled seed": "SELECT g.id FROM generations g ANTI JOIN (SELECT id FROM profiles WHERE status = 'ok') p ON p.id = g.seed_id",
    "gate without generation": "SELECT id FROM gates ANTI JOIN generations USING (id)",
    "review without passed gate": "SELECT r.id FROM reviews r ANTI JOIN (SELECT id FROM gates WHERE passed) g ON g.id = r.generation_id",
    "verdict without reviews": "SELECT v.id FROM verdicts v ANTI JOIN reviews r ON r.generation_id = v.id",
    "adjudication without disputed verdict": "SELECT a.id FROM adjudications a ANTI JOIN (SELECT id FROM verdicts WHERE decision = 'adjudicate') v ON v.id = a.id",
    "sample not kept by a decision": """SELECT s.id FROM samples s ANTI JOIN (
        SELECT id FROM verdicts WHERE decision = 'accept'
        UNION ALL SELECT id FROM adjudications WHERE keep) k ON k.id = s.id""",
    "sample with a rejection": "SELECT s.id FROM samples s JOIN rejections r ON r.id = s.id",
    # A finished run leaves nothing pending between stages:
    "ok generation never gated": "SELECT g.id FROM generations g ANTI JOIN gates x ON x.id = g.id WHERE g.status = 'ok'",
    "passed gate never reviewed": "SELECT g.id FROM gates g ANTI JOIN reviews r ON r.generation_id = g.id WHERE g.passed",
    "reviewed sample never decided": "SELECT DISTINCT generation_id FROM reviews ANTI JOIN verdicts v ON v.id = reviews.generation_id",
    "dispute never adjudicated": "SELECT v.id FROM verdicts v ANTI JOIN adjudications a ON a.id = v.id WHERE v.decision = 'adjudicate'",
    "accepted never walked by the diversity filter":
        "SELECT v.id FROM verdicts v ANTI JOIN diversity d ON d.id = v.id WHERE v.decision = 'accept'",
    "diverse never annotated": "SELECT d.id FROM diversity d ANTI JOIN annotations a ON a.id = d.id WHERE d.kept",
    "annotated never sampled": "SELECT a.id FROM annotations a ANTI JOIN samples s ON s.id = a.id",
    "sample not diverse": "SELECT s.id FROM samples s ANTI JOIN (SELECT id FROM diversity WHERE kept) d ON d.id = s.id",
}


def check_run(run_dir, *, reviewers: int = 3) -> dict:
    con = Store(run_dir).connect()
    q = lambda sql: con.sql(sql).fetchall()  # noqa: E731
    for table in KEYED_TABLES:
        dupes = q(f"SELECT id, count(*) FROM {table} GROUP BY id HAVING count(*) > 1 LIMIT 3")
        assert not dupes, f"duplicate ids in {table}: {dupes}"
    for name, sql in ORPHANS.items():
        rows = q(sql + " LIMIT 3")
        assert not rows, f"{name}: {rows}"
    wrong = q(f"SELECT generation_id, count(*) FROM reviews GROUP BY 1 HAVING count(*) <> {reviewers} LIMIT 3")
    assert not wrong, f"generations without exactly {reviewers} reviews: {wrong}"
    assert not q("SELECT * FROM rejections WHERE stage IS NULL OR reason IS NULL OR reason = '' LIMIT 1")
    assert not q("SELECT * FROM rejections WHERE reason IN ('near_duplicate', 'too_similar') AND duplicate_of IS NULL LIMIT 1")
    return {t: q(f"SELECT count(*) FROM {t}")[0][0] for t in KEYED_TABLES + ["rejections", "quarantine"]}


FINAL_TABLES = {
    "samples": "SELECT id FROM samples ORDER BY id",
    "rejections": "SELECT id, stage, reason FROM rejections ORDER BY id, stage",
    "verdicts": "SELECT id, decision, mean FROM verdicts ORDER BY id",
    "reviews": "SELECT id, mean, status FROM reviews ORDER BY id",
}


def segments(run_dir, table):
    folder = run_dir / table
    return len([p for p in folder.glob("*.parquet") if p.name != "_empty.parquet"]) if folder.exists() else 0


def wait_for(proc, condition, timeout=120):
    """Whether `condition` came to hold while `proc` ran (False: it exited first). Past `timeout` the process
    is killed and the test fails with the end of what it printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    _fail(proc, f"timed out after {timeout} s waiting for the run")


def reach(proc, condition, timeout=120) -> None:
    """Wait until `condition` holds while `proc` runs; if the process exits first, fail with what it printed."""
    if not wait_for(proc, condition, timeout):
        _fail(proc, "the run exited before the point the test waits for")


def _fail(proc, why: str):
    """Stop `proc`, close its pipes (so that no later test meets them unclosed) and fail with its stderr."""
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate()
    err = err.decode(errors="replace") if isinstance(err, bytes) else err or ""
    raise AssertionError(f"{why} (exit {proc.returncode}): {err[-3000:]}")


def final_state(run_dir):
    return {name: sql_rows(run_dir, q) for name, q in FINAL_TABLES.items()}


SMALL_BATCHES = "batch_size = 8\ncpu_batch_size = 16\nrounds = 2\n"
SMALL_WALK = "walk_batch = 16\n"  # [diversity]: the walk in several batches too


def state(run_dir):
    """Every decision and every table's ids: what must not depend on where the batches ran."""
    tables = {name: sql_rows(run_dir, q) for name, q in FINAL_TABLES.items()}
    tables.update({t: sql_rows(run_dir, f"SELECT id FROM {t} ORDER BY id") for t in KEYED_TABLES})
    tables["gates"] = sql_rows(run_dir, "SELECT id, passed, reason, duplicate_of FROM gates ORDER BY id")
    tables["diversity"] = sql_rows(run_dir, "SELECT id, kept, duplicate_of FROM diversity ORDER BY id")
    return tables
