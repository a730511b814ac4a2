"""The run directory: segments committed whole by rename, declared columns enforced, digests that see every
change, and a lock that refuses a second writer."""
import os

import polars as pl
import pytest

from gra_stream.errors import UserError
from gra_stream.store import RunLock, Store


def verdicts(*ids):
    return pl.DataFrame({"id": list(ids), "n_reviews": [3] * len(ids), "mean": [8.5] * len(ids),
                         "std": [0.5] * len(ids), "decision": ["accept"] * len(ids), "reason": [""] * len(ids)})


def test_a_segment_is_committed_whole_with_the_declared_columns(tmp_path):
    store = Store(tmp_path / "run")
    store.init()
    extra = verdicts("a", "b").with_columns(pl.lit(1).alias("not_declared"))
    path = store.write_segment("verdicts", "decide-x", extra)
    assert path.exists() and not list(path.parent.glob(".*.tmp"))
    assert pl.read_parquet(path).columns == ["id", "n_reviews", "mean", "std", "decision", "reason"]
    assert store.connect().sql("SELECT id FROM verdicts ORDER BY id").fetchall() == [("a",), ("b",)]
    with pytest.raises(RuntimeError, match="lacks declared columns"):
        store.write_segment("verdicts", "decide-y", verdicts("c").drop("decision"))
    assert not (path.parent / "decide-y.parquet").exists()


def test_the_digest_sees_a_new_a_removed_and_a_rewritten_segment(tmp_path):
    store = Store(tmp_path / "run")
    store.init()
    store.write_segment("verdicts", "decide-1", verdicts("a"))
    first = store.digest(["verdicts"])
    assert store.digest(["verdicts"]) == first
    store.write_segment("verdicts", "decide-2", verdicts("b"))
    second = store.digest(["verdicts"])
    assert second != first
    store.remove_segments("verdicts", "decide-2")
    assert store.digest(["verdicts"]) == first
    os.utime(store.table_dir("verdicts") / "decide-1.parquet", ns=(1, 1))
    assert store.digest(["verdicts"]) != first


def test_a_second_writer_is_refused_and_the_lock_is_free_again_after(tmp_path):
    (tmp_path / "run").mkdir()
    with RunLock(tmp_path / "run"):
        with pytest.raises(UserError, match=rf"in use by another gra-stream run \(pid {os.getpid()}\)"):
            with RunLock(tmp_path / "run"):
                pass
    with RunLock(tmp_path / "run"):
        pass
