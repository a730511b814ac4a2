"""The call cache: a call put by one process is found by any other, whenever that one started; a lookup
reads the keys of the segments written since the one before it, and rows only from segments that hold a
wanted key."""
import pyarrow.parquet as pq

from gra_stream import call_cache
from gra_stream.backends import ChatRequest, Completion
from gra_stream.call_cache import CallCache, key_numbers
from gra_stream.config import ModelSpec
from gra_stream.store import Store

SPEC = ModelSpec(name="m", backend="openai", url="http://127.0.0.1:1/v1", api_model="m")


def request(i: int) -> ChatRequest:
    return ChatRequest(({"role": "user", "content": f"question {i}"},), None, 64, 0.0, 1.0, i)


def reply(i: int) -> Completion:
    return Completion(f"answer {i}", 10 + i, 20 + i, "stop")


def store(tmp_path) -> Store:
    s = Store(tmp_path / "run")
    s.init()
    return s


def test_keys_read_as_the_integers_of_their_hex_digits():
    assert key_numbers(["0000000000000001", "ffffffffffffffff"]).tolist() == [1, 2**64 - 1]


def test_a_lookup_finds_what_another_process_put_since_and_only_that(tmp_path):
    s = store(tmp_path)
    reader, writer = CallCache(s), CallCache(s)
    assert reader.get(SPEC, [request(i) for i in range(4)]) == {}
    writer.put(SPEC, [request(0), request(1)], [reply(0), reply(1)])
    writer.put(SPEC, [request(3)], [reply(3)])
    assert reader.get(SPEC, [request(i) for i in range(4)]) == {0: reply(0), 1: reply(1), 3: reply(3)}
    assert reader.hits == 3
    assert writer.get(SPEC, [request(3), request(2)]) == {0: reply(3)}, "what a process put, it finds"
    other = ModelSpec(name="m", backend="openai", url="http://127.0.0.1:2/v1", api_model="m")
    assert reader.get(other, [request(0)]) == {}, "another endpoint is another key"


def test_failed_calls_are_not_cached(tmp_path):
    cache = CallCache(store(tmp_path))
    cache.put(SPEC, [request(0), request(1)], [reply(0), Completion("", 5, 0, "error")])
    assert CallCache(cache.store).get(SPEC, [request(0), request(1)]) == {0: reply(0)}


def test_a_lookup_reads_new_segments_keys_once_and_rows_only_where_a_key_is(tmp_path, monkeypatch):
    s = store(tmp_path)
    writer = CallCache(s)
    for i in range(6):
        writer.put(SPEC, [request(i)], [reply(i)])
    reads = []
    read_table = pq.read_table
    monkeypatch.setattr(call_cache.pq, "read_table", lambda path, columns: reads.append((path.name, tuple(columns)))
                        or read_table(path, columns=columns))
    reader = CallCache(s)
    assert reader.get(SPEC, [request(2), request(9)]) == {0: reply(2)}
    keys_read = [name for name, columns in reads if columns == ("key",)]
    rows_read = [name for name, columns in reads if columns != ("key",)]
    assert len(keys_read) == len(set(keys_read)) == 6 and len(rows_read) == 1
    reads.clear()
    assert reader.get(SPEC, [request(7)]) == {}
    assert reads == [], "nothing new was written, so nothing is read"
    writer.put(SPEC, [request(7)], [reply(7)])
    assert reader.get(SPEC, [request(7)]) == {0: reply(7)}
    assert [columns for _, columns in reads] == [("key",), tuple(call_cache._COLUMNS)]


def test_a_segment_removed_after_it_was_indexed_is_a_miss(tmp_path):
    s = store(tmp_path)
    cache = CallCache(s)
    cache.put(SPEC, [request(0)], [reply(0)])
    for segment in s.table_dir("call_cache").glob("[!_]*.parquet"):
        segment.unlink()
    assert cache.get(SPEC, [request(0)]) == {}
