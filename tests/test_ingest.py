"""Ingest's bookkeeping of the seeds it already has: duplicates within a chunk, across chunks and files."""
import json

import polars as pl
import pytest
from hypothesis import given, strategies as st

from gra_stream.config import Fields
from gra_stream.ingest import KnownIds, same_mappings
from tests.conftest import frame, run_fake

IDS = st.integers(0, 2**64 - 1).map(lambda n: f"{n:016x}") | st.sampled_from(["0" * 16, "f" * 16, "0123456789abcdef"])


@given(st.lists(IDS, max_size=20), st.lists(st.lists(IDS, max_size=30), max_size=5))
def test_known_ids_pass_each_id_once_like_a_set(before, chunks):
    known, reference = KnownIds(pl.Series(before, dtype=pl.String)), set(before)
    for chunk in chunks:
        fresh = known.new(pl.Series(chunk, dtype=pl.String)).tolist()
        want = []
        for i in chunk:
            want.append(i not in reference)
            reference.add(i)
        assert fresh == want


def test_duplicates_across_chunks_and_files_are_counted_once(tmp_path, monkeypatch):
    from gra_stream import ingest

    monkeypatch.setattr(ingest, "CHUNK_ROWS", 7)  # many chunks: a repeat is often in another chunk
    rows = [{"instruction": f"Name a fruit number {i % 23}", "output": f"Fruit {i % 23}"} for i in range(60)]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in rows))
    second.write_text("".join(json.dumps(r) + "\n" for r in rows[:30] + [{"instruction": "New one", "output": "Yes"}]))
    run_fake([first, second], tmp_path / "run", diversity={"enabled": False})
    files = frame(tmp_path / "run", "SELECT path, rows, seeds, duplicates FROM files ORDER BY path")
    assert files.rows() == [(str(first), 60, 23, 37), (str(second), 31, 1, 30)]
    assert frame(tmp_path / "run", "SELECT count(*) AS n, count(DISTINCT id) AS d FROM seeds").rows() == [(24, 24)]


def test_two_fields_sections_map_the_same_only_where_every_file_resolves_alike(tmp_path):
    gsm, alpaca = tmp_path / "gsm.jsonl", tmp_path / "alpaca.jsonl"
    gsm.write_text(json.dumps({"question": "How many?", "answer": "3"}) + "\n")
    alpaca.write_text(json.dumps({"instruction": "Sort these.", "input": "b a", "output": "a b"}) + "\n")
    recognised, spelled_out = Fields(), Fields(instruction="Question", response="answer")
    assert same_mappings([gsm], recognised, spelled_out)
    assert not same_mappings([gsm, alpaca], recognised, spelled_out), "alpaca has no `question`"
    assert not same_mappings([gsm], recognised, Fields(response="question"))
    assert not same_mappings([tmp_path / "gone.jsonl"], recognised, recognised), "a file it cannot read"


def test_an_escaped_half_surrogate_pair_is_a_bad_row_not_a_crash(tmp_path):
    """"\\ud800" alone is valid JSON that Python reads into a string no UTF-8 file can hold: writing the
    seeds failed with a traceback. It is a bad row now, its raw record escaped, and the others go on."""
    path = tmp_path / "s.jsonl"
    path.write_text('{"instruction": "broken \\ud800 emoji", "output": "x"}\n'
                    + json.dumps({"instruction": "Name a fruit", "output": "fig"}) + "\n")
    run_fake([path], tmp_path / "run", diversity={"enabled": False})
    errors = frame(tmp_path / "run", "SELECT line, reason, raw FROM ingest_errors").rows()
    assert errors == [(1, "instruction field 'instruction' contains an unpaired surrogate (a broken \\u escape), "
                          "which is not text", '{"instruction": "broken \\ud800 emoji", "output": "x"}')]
    assert frame(tmp_path / "run", "SELECT instruction FROM seeds").rows() == [("Name a fruit",)]


@pytest.mark.parametrize("text,error", [(json.dumps({"q": "How many?", "a": "3"}) + "\n", "cannot find the instruction field"),
                                        ("", "the file is empty")])
def test_a_file_that_cannot_be_mapped_stops_the_run_before_any_file_is_read(tmp_path, monkeypatch, text, error):
    """Among several new files, one that the config cannot map, or an empty one, stops the run before the
    others are read (where the files before it were ingested first); files read by an earlier run are not
    opened again."""
    from gra_stream import ingest
    from gra_stream.errors import UserError

    good, odd = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    good.write_text(json.dumps({"instruction": "Name a fruit", "output": "fig"}) + "\n")
    odd.write_text(text)
    with pytest.raises(UserError, match=f"b.jsonl: {error}"):
        run_fake([good, odd], tmp_path / "run", diversity={"enabled": False})
    assert frame(tmp_path / "run", "SELECT count(*) AS n FROM seeds").rows() == [(0,)]
    run_fake([good], tmp_path / "run", diversity={"enabled": False})
    opened = []
    monkeypatch.setattr(ingest, "first_record", lambda path, read=ingest.first_record: opened.append(path) or read(path))
    with pytest.raises(UserError, match="b.jsonl"):
        run_fake([good, odd], tmp_path / "run", diversity={"enabled": False})
    assert opened == [odd], "the file read before is not opened again"
    assert frame(tmp_path / "run", "SELECT path FROM files").rows() == [(str(good),)]
