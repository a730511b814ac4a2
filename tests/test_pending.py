"""A pass's pending rows: drained into an Arrow file in record batches, read back in batches of another size."""
import duckdb
import pyarrow as pa

from gra_stream import pending


def test_batches_cut_the_drained_rows_in_order_whatever_the_record_batches(tmp_path, monkeypatch):
    """Batches of 100 rows over record batches of 64: each batch is made of the end of one record batch and
    the start of the next, and together they are the query's rows in its order, the last batch shorter."""
    monkeypatch.setattr(pending, "DRAIN_BATCH_ROWS", 64)
    con = duckdb.connect()
    query = "SELECT i AS id, 'row ' || i AS text FROM range(1050) t(i) ORDER BY i DESC"
    assert pending.drain(con, query, tmp_path / "drain.arrow") == 1050
    with pa.OSFile(str(tmp_path / "drain.arrow"), "rb") as source:
        assert pa.ipc.open_file(source).num_record_batches == 17
    frames = list(pending.batches(tmp_path / "drain.arrow", 100))
    assert [f.height for f in frames] == [100] * 10 + [50]
    assert [r for f in frames for r in f.rows()] == con.sql(query).fetchall()
