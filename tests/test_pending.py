"""A pass's pending rows: drained into an Arrow file in record batches, read back in batches of another size."""
import duckdb
import pyarrow as pa

from gra_stream import pending
from gra_stream.waves import Scope


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


def test_batches_cut_where_a_wave_ends_are_those_of_each_wave_alone(tmp_path, monkeypatch):
    """An ordered stage's pass over several waves (`Scope.cuts`): its rows come wave by wave, and its
    batches are the ones a pass over each wave alone makes, whatever the record batches."""
    monkeypatch.setattr(pending, "DRAIN_BATCH_ROWS", 64)
    con = duckdb.connect()
    con.sql("CREATE TABLE rows AS SELECT printf('%04d', (i * 7919) % 1000) AS seed_id, i AS score "
            "FROM range(1000) t(i)")
    cuts = ("0100", "0450", "0451")  # the third wave has one row
    whole = Scope(cuts=cuts)
    query = f"SELECT seed_id, score, {whole.wave('seed_id')} AS wave FROM rows ORDER BY wave, score DESC"
    assert pending.drain(con, query, tmp_path / "whole.arrow") == 1000
    frames = [f.drop("wave").rows() for f in pending.batches(tmp_path / "whole.arrow", 128, "wave")]
    alone = []
    for low, high in zip(("", *cuts), (*cuts, None)):
        wave = Scope(below=high)
        pending.drain(con, f"SELECT seed_id, score, 0 AS wave FROM rows WHERE seed_id >= '{low}' AND "
                           f"{wave.seeds('seed_id')} ORDER BY score DESC", tmp_path / "wave.arrow")
        alone += [f.drop("wave").rows() for f in pending.batches(tmp_path / "wave.arrow", 128, "wave")]
    assert frames == alone
    assert [len(f) for f in frames] == [100, 128, 128, 94, 1, 128, 128, 128, 128, 37]
    assert len(list(pending.batches(tmp_path / "whole.arrow", 128))) == 8, "without the cut, batches span waves"
