import csv
import bz2
import gzip
import io
import json
import lzma

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings, strategies as st

from gra_stream.errors import UserError
from gra_stream.readers import get_path, iter_rows

RECORDS = [{"instruction": "Add 2 and 3.", "output": "5"}, {"instruction": "Name a colour.", "output": "Blue"}]


def jsonl_bytes(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.mark.parametrize("name,writer", [
    ("s.jsonl", lambda p: p.write_bytes(jsonl_bytes(RECORDS))),
    ("s.jsonl.gz", lambda p: p.write_bytes(gzip.compress(jsonl_bytes(RECORDS)))),
    ("s.jsonl.zst", lambda p: p.write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes(RECORDS)))),
    ("s.jsonl.bz2", lambda p: p.write_bytes(bz2.compress(jsonl_bytes(RECORDS)))),
    ("s.json.xz", lambda p: p.write_bytes(lzma.compress(json.dumps(RECORDS).encode()))),
    ("s.csv.xz", lambda p: p.write_bytes(lzma.compress(b"instruction,output\nAdd 2 and 3.,5\nName a colour.,Blue\n"))),
    ("s.json", lambda p: p.write_text(json.dumps(RECORDS))),
    ("s.parquet", lambda p: pq.write_table(pa.Table.from_pylist(RECORDS), p)),
    ("s.tsv", lambda p: p.write_text("instruction\toutput\n" + "".join(f"{r['instruction']}\t{r['output']}\n" for r in RECORDS))),
    ("s.tsv.gz", lambda p: p.write_bytes(gzip.compress(b"instruction\toutput\nAdd 2 and 3.\t5\nName a colour.\tBlue\n"))),
])
def test_every_format_yields_the_same_records(tmp_path, name, writer):
    path = tmp_path / name
    writer(path)
    rows = list(iter_rows(path))
    assert [r.record for r in rows] == RECORDS
    assert [r.line for r in rows] == [1, 2]


def test_a_csv_with_semicolons_as_spreadsheets_write_it(tmp_path):
    """Spreadsheets in locales whose decimal mark is the comma separate CSV cells with semicolons; a comma
    CSV whose text holds semicolons stays a comma CSV."""
    semi = tmp_path / "semi.csv"
    semi.write_text('instruction;output\n"Add 2,5 and 3.";5,5\nName a colour.;Blue\n', encoding="utf-8-sig")
    assert [r.record for r in iter_rows(semi)] == [{"instruction": "Add 2,5 and 3.", "output": "5,5"},
                                                   {"instruction": "Name a colour.", "output": "Blue"}]
    comma = tmp_path / "comma.csv"
    comma.write_text('instruction,output\nList two; then three.,"a; b"\n')
    assert [r.record for r in iter_rows(comma)] == [{"instruction": "List two; then three.", "output": "a; b"}]


def test_csv_with_embedded_newlines_and_bom(tmp_path):
    path = tmp_path / "s.csv"
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "output"])
        w.writerow(["Write two lines.", "line one\nline two"])
        w.writerow(["Say hi.", "hi"])
    rows = list(iter_rows(path))
    assert rows[0].record == {"instruction": "Write two lines.", "output": "line one\nline two"}
    assert [r.line for r in rows] == [1, 2]


def test_bad_jsonl_lines_are_reported_and_good_ones_kept(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(RECORDS[0]).encode() + b"\n"
                     b"{not json\n"
                     b"\n"
                     b"[1, 2]\n"
                     b'{"instruction": "caf\xe9"}\n'
                     + json.dumps(RECORDS[1]).encode() + b"\n")
    rows = list(iter_rows(path))
    assert [r.record for r in rows if r.record] == RECORDS
    errors = {r.line: r.error for r in rows if r.error}
    assert set(errors) == {2, 4, 5}
    assert "malformed JSON" in errors[2] and "expected a JSON object" in errors[4] and "invalid UTF-8" in errors[5]


@pytest.mark.parametrize("suffix,compress", [(".gz", gzip.compress), (".bz2", lambda data: bz2.compress(data, 1)),
                                             (".xz", lzma.compress)])
def test_a_truncated_compressed_file_keeps_the_lines_before_the_cut(tmp_path, suffix, compress):
    data = compress(jsonl_bytes(RECORDS * 2000))
    path = tmp_path / f"cut.jsonl{suffix}"
    path.write_bytes(data[: len(data) // 2])
    rows = list(iter_rows(path))
    assert rows[-1].error.startswith("file truncated or corrupt")
    assert all(r.record in RECORDS for r in rows[:-1]) and len(rows) > 1


@pytest.mark.parametrize("name,compress", [("cut.jsonl.gz", gzip.compress), ("cut.jsonl.bz2", bz2.compress),
                                           ("cut.jsonl.xz", lzma.compress), ("cut.csv.xz", lzma.compress),
                                           ("cut.csv.bz2", bz2.compress)])
def test_a_file_cut_within_its_first_block_is_a_bad_row_not_a_crash(tmp_path, name, compress):
    data = compress(jsonl_bytes(RECORDS))
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    rows = list(iter_rows(path))
    assert len(rows) == 1 and rows[0].record is None and rows[0].error, rows


def test_deeply_nested_json_is_a_bad_row_not_a_crash(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n" + json.dumps(RECORDS[0]) + "\n")
    rows = list(iter_rows(path))
    assert rows[0].error and rows[1].record == RECORDS[0]


def test_unknown_extension_is_a_user_error(tmp_path):
    path = tmp_path / "seeds.txt"
    path.write_text("hello")
    with pytest.raises(UserError, match="unknown seed file type"):
        list(iter_rows(path))


def test_arrow_files_under_their_other_names_are_read(tmp_path):
    """pandas' `to_feather` (LZ4-compressed by default), Polars' `write_ipc` (string_view columns) and an
    IPC stream named .arrows: each was "unknown seed file type"."""
    import pandas as pd
    import polars as pl

    pd.DataFrame(RECORDS).to_feather(tmp_path / "pandas.feather")
    pl.DataFrame(RECORDS).write_ipc(tmp_path / "polars.ipc")
    pl.DataFrame(RECORDS).write_ipc_stream(tmp_path / "polars.arrows")
    for name in ("pandas.feather", "polars.ipc", "polars.arrows"):
        assert [r.record for r in iter_rows(tmp_path / name)] == RECORDS, name


def test_a_list_of_prompts_is_read_as_instruction_only_records(tmp_path):
    """JSON texts, one per line or in an array, are prompts: each is a record with an instruction, where
    each was a bad row; an empty text stays one."""
    prompts = ["Write a haiku about the sea.", "Explain how a hash map resolves collisions."]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in [*prompts, " "]))
    (tmp_path / "prompts.json").write_text(json.dumps([*prompts, ""]))
    for name in ("prompts.jsonl", "prompts.json"):
        rows = list(iter_rows(tmp_path / name))
        assert [r.record for r in rows[:2]] == [{"instruction": p} for p in prompts], name
        assert rows[2].record is None and "an empty text" in rows[2].error, name


def test_get_path_follows_dicts_and_lists():
    record = {"instances": [{"input": "", "output": "yes"}], "a": {"b": 1}}
    assert get_path(record, "instances.0.output") == "yes"
    assert get_path(record, "a.b") == 1
    assert get_path(record, "instances.3.output") is None
    assert get_path(record, "a.b.c") is None


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3)
                          .map(lambda d: json.dumps(d).encode())), max_size=20))
@example(lines=[b"\x80", b"["])  # found by the fuzzer: an undecodable first byte hid that the file is no array
def test_fuzzed_jsonl_never_crashes_and_accounts_for_every_line(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    lines = [l.replace(b"\n", b" ").replace(b"\r", b" ") for l in lines]
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = list(iter_rows(path))
    nonblank = [i + 1 for i, l in enumerate(lines) if l.strip()]
    if b"\n".join(lines).decode("utf-8-sig", "replace").lstrip(" \t\r\n").startswith("["):
        return  # read as a JSON array: the file's first character that is not JSON whitespace is '['
    if lines and lines[0].decode("utf-8-sig", "replace").lstrip().startswith("["):
        return  # its first line is not a JSON object, whatever whitespace comes before it
    if lines and lines[0][:2] in (b"\xff\xfe", b"\xfe\xff"):
        return  # read as UTF-16
    assert [r.line for r in rows] == nonblank
    assert all((r.record is None) == bool(r.error) for r in rows)


def test_a_single_line_json_array_in_a_jsonl_file(tmp_path):
    path = tmp_path / "array.jsonl"
    path.write_text(json.dumps(RECORDS))
    assert [r.record for r in iter_rows(path)] == RECORDS


CHATS = [[{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}] for r in RECORDS]


def test_json_lines_whose_lines_are_lists_of_turns_give_a_conversation_a_line(tmp_path):
    # Before, a first '[' made the file one JSON array: the first line's turns became two records, and
    # the rest of the file one bad row.
    lines = tmp_path / "chats.jsonl"
    lines.write_text("\n" + "".join(json.dumps(chat) + "\n" for chat in CHATS * 2))
    array = tmp_path / "chats.json"
    array.write_text(json.dumps(CHATS) + "\n")
    single = tmp_path / "one.jsonl"
    single.write_text(json.dumps(RECORDS) + "\n\n")  # one line, one array: its items
    assert [r.record for r in iter_rows(lines)] == [{"messages": chat} for chat in CHATS * 2]
    assert [r.record for r in iter_rows(array)] == [{"messages": chat} for chat in CHATS]
    assert [r.record for r in iter_rows(single)] == RECORDS
    batches = tmp_path / "batches.jsonl"  # arrays of records appended a line each: not conversations
    batches.write_text(json.dumps(RECORDS) + "\n" + json.dumps(RECORDS) + "\n")
    rows = list(iter_rows(batches))
    assert [r.line for r in rows] == [1, 2] and all(r.error.startswith("expected a JSON object, a text or a list "
                                                                        "of turns, got list") for r in rows)


def test_a_multi_line_json_array(tmp_path):
    path = tmp_path / "array.json"
    path.write_text(json.dumps(RECORDS, indent=2))
    assert [r.record for r in iter_rows(path)] == RECORDS


@pytest.mark.parametrize("name,write", [
    ("s.jsonl", lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-16")),
    ("s.jsonl.gz", lambda p: p.write_bytes(gzip.compress("".join(json.dumps(r) + "\r\n" for r in RECORDS).encode("utf-16")))),
    ("s.json", lambda p: p.write_text(json.dumps(RECORDS, indent=2), encoding="utf-16")),
    ("s.csv", lambda p: p.write_text("instruction,output\nAdd 2 and 3.,5\nName a colour.,Blue\n", encoding="utf-16")),
    ("s.tsv", lambda p: p.write_bytes("\ufeffinstruction\toutput\nAdd 2 and 3.\t5\nName a colour.\tBlue\n".encode("utf-16-be"))),
])
def test_utf16_text_with_a_byte_order_mark_is_read(tmp_path, name, write):
    # What Windows tools (PowerShell's redirection, Notepad's "Unicode") save text as.
    path = tmp_path / name
    write(path)
    rows = list(iter_rows(path))
    assert [r.record for r in rows] == RECORDS and not any(r.error for r in rows)


@pytest.mark.parametrize("name,compress", [("excel.csv", lambda b: b), ("excel.tsv.gz", gzip.compress)])
def test_a_spreadsheets_windows_1252_text_is_read_whole(tmp_path, name, compress):
    # Excel's "CSV (Comma delimited)" on Western-locale Windows: not UTF-8. The first accented row comes
    # after a megabyte of plain ASCII, past the blocks a reader peeks at.
    plain = [[f"Add {i} and 1.", str(i + 1)] for i in range(60_000)]
    accented = [["Décris le café en 3 mots, s\u2019il te plaît.", "Noir, chaud, 2\u20ac"], ["Say hi.", "Hi!"]]
    out = io.StringIO()
    csv.writer(out, delimiter="," if ".csv" in name else "\t").writerows([["instruction", "output"], *plain, *accented])
    text = out.getvalue()
    assert len(text) > 1 << 20
    (tmp_path / name).write_bytes(compress(text.encode("cp1252")))
    rows = list(iter_rows(tmp_path / name))
    assert not any(r.error for r in rows) and len(rows) == len(plain) + 2
    assert [list(r.record.values()) for r in rows[-2:]] == accented


def test_delimited_text_in_neither_utf8_nor_windows_1252_says_what_to_do(tmp_path):
    path = tmp_path / "sjis.csv"
    path.write_bytes(b"instruction,output\nAdd 2 and 3.,5\n\x81\x8d\x90,3\n")  # bytes that are neither
    rows = list(iter_rows(path))
    assert rows[0].record == {"instruction": "Add 2 and 3.", "output": "5"}
    assert rows[1].line == 2 and rows[1].error.startswith("neither UTF-8 nor Windows-1252")
    assert "convert the file to UTF-8 (iconv -f ITS_ENCODING -t UTF-8)" in rows[1].error and len(rows) == 2


def test_a_tsv_file_without_quoting_keeps_its_quotes_and_its_rows(tmp_path):
    # As sentence corpora ship TSV (Tatoeba): a quote is text. Before, the quotes of the first row were
    # dropped, and the unpaired one of the second file joined every later row into one field.
    rows = [['"Hello," she said.', "Bonjour, dit-elle."], ['Say "hi" twice.', "hi hi"], ["Count to 3.", "1 2 3"]]
    for first in ('"Hello," she said.', '"Hello, she said.'):
        path = tmp_path / "pairs.tsv"
        path.write_text("".join("\t".join(r) + "\n" for r in [["instruction", "output"], [first, rows[0][1]], *rows[1:]]))
        assert [list(r.record.values()) for r in iter_rows(path)] == [[first, rows[0][1]], *rows[1:]]


def test_a_tsv_file_quoted_as_pandas_writes_it_is_read_with_its_quoting(tmp_path):
    records = [{"instruction": 'Say "hi"\ttwice.', "output": "line one\nline two"}, {"instruction": "Hi.", "output": "Hi!"}]
    path = tmp_path / "pandas.tsv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["instruction", "output"], delimiter="\t")
        writer.writeheader()
        writer.writerows(records)
    assert '"Say ""hi""' in path.read_text()
    assert [r.record for r in iter_rows(path)] == records


def test_repeated_csv_header_names_lose_no_column(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("prompt,prompt,,prompt_1,,response\nHi there,again,x,one,y,Hello\n")
    [row] = list(iter_rows(path))
    assert row.record == {"prompt": "Hi there", "prompt_2": "again", "prompt_1": "one", "": "y", "response": "Hello"}


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.lists(st.one_of(st.dictionaries(st.text(max_size=6), st.one_of(st.text(max_size=20), st.integers(),
                                                                          st.floats(allow_nan=False), st.none()),
                                          max_size=3), st.integers()), max_size=12),
       st.sampled_from([None, 1]), st.sampled_from(["s.json", "s.json.gz"]))
def test_a_json_array_is_read_item_by_item_as_json_reads_it(tmp_path, items, indent, name):
    path = tmp_path / name
    data = json.dumps(items, indent=indent).encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    rows = list(iter_rows(path))
    assert [r.line for r in rows] == list(range(1, len(items) + 1))
    assert [r.record for r in rows] == [v if isinstance(v, dict) else None for v in items]
    assert all(bool(r.error) == (not isinstance(v, dict)) for r, v in zip(rows, items))


def test_a_json_array_with_nan_or_a_broken_tail(tmp_path):
    # NaN is not JSON, but json.dumps writes it and json.loads reads it: read whole from where streaming stopped
    path = tmp_path / "nan.json"
    path.write_text('\ufeff[{"instruction": "a", "output": 1.5},\n {"instruction": "b", "output": NaN}]')
    records = [r.record for r in iter_rows(path)]
    assert records[0] == {"instruction": "a", "output": 1.5} and records[1]["instruction"] == "b"
    assert records[1]["output"] != records[1]["output"], "NaN"
    path.write_text(json.dumps(RECORDS)[:-20])  # cut off in the middle of the second item
    rows = list(iter_rows(path))
    assert [r.record for r in rows] == [RECORDS[0], None]
    assert rows[1].line == 2 and rows[1].error.startswith("malformed JSON array after item 1")


def test_a_large_json_array_is_streamed(tmp_path):
    """A 1M-record array (OpenHermes, MetaMathQA and ShareGPT ship so) was parsed whole: a few GB of
    Python objects. Reading its first records now costs what they cost."""
    import tracemalloc

    path = tmp_path / "big.json"
    with open(path, "w") as f:
        f.write("[" + ",".join(json.dumps({"instruction": f"Task {i} " + "x" * 200, "output": "y"}) for i in range(40_000)) + "]")
    tracemalloc.start()
    rows = iter_rows(path)
    first = [next(rows) for _ in range(10)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows.close()
    assert [r.record["instruction"][:7] for r in first] == [f"Task {i} " for i in range(10)]
    assert peak < path.stat().st_size / 4, (peak, path.stat().st_size)


def test_one_json_object_spread_over_lines_is_read_as_its_list_of_records(tmp_path):
    # as json.dump(..., indent=2) writes a dataset: SQuAD-style {"version", "data"}, or its splits
    path = tmp_path / "doc.json"
    path.write_text(json.dumps({"version": "1.0", "data": RECORDS, "tags": ["a", "b"]}, indent=2))
    assert [r.record for r in iter_rows(path)] == RECORDS
    path.write_text(json.dumps({"test": RECORDS[:1], "train": RECORDS}, indent=1))
    assert [r.record for r in iter_rows(path)] == RECORDS, "the train split"
    path.write_text(json.dumps({"few": RECORDS[:1], "more": RECORDS}, indent=1))
    assert [r.record for r in iter_rows(path)] == RECORDS, "the longest list"
    path.write_text(json.dumps({"data": [{**RECORDS[0], "score": float("nan")}, RECORDS[1]]}, indent=1))
    assert [r.record["instruction"] for r in iter_rows(path)] == [r["instruction"] for r in RECORDS], "NaN"
    path.write_text(json.dumps({"instruction": "Add 2 and 3.", "output": "5"}, indent=1))  # no list: JSON Lines
    assert all(r.error.startswith("malformed JSON") for r in iter_rows(path))


def test_json_lines_with_a_broken_first_line_stay_json_lines(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"instruction": "cut off\n' + "".join(json.dumps(r) + "\n" for r in RECORDS))
    rows = list(iter_rows(path))
    assert rows[0].error.startswith("malformed JSON") and [r.record for r in rows[1:]] == RECORDS


@pytest.mark.parametrize("orient", ["columns", "index", "split", "table"])
def test_a_dataframe_saved_with_pandas_to_json_is_read_as_its_rows(tmp_path, orient):
    """`df.to_json(path)` writes one JSON object on one line, by column unless told otherwise: its rows are
    the records, in order, whatever the layout (pandas comes with `datasets`, in the test extra)."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame([{**r, "score": i + 0.5} for i, r in enumerate(RECORDS * 3)])
    path = tmp_path / "frame.json"
    frame.to_json(path, orient=orient)
    rows = list(iter_rows(path))
    records = [{k: v for k, v in r.record.items() if k != "index"} for r in rows]  # "table" adds the index
    assert records == frame.to_dict(orient="records")
    assert [r.line for r in rows] == [1, 2, 3, 4, 5, 6]


def test_a_record_like_a_pandas_layout_only_in_part_is_one_record(tmp_path):
    """Objects that are not a DataFrame's layout stay one record each (a bad seed where a field is an object)."""
    lines = [{"instruction": {"0": "a"}, "output": "b"},            # a column, but not all values objects
             {"a": {"0": 1}, "b": {"1": 2}},                        # columns with different row labels
             {"columns": ["x"], "data": [[1, 2]]},                  # split rows longer than the columns
             {"q": {"text": "x"}, "a": {"text": "y"}}]              # labels that are not row numbers
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [r.record for r in iter_rows(path)] == lines


def test_a_truncated_arrow_stream_keeps_the_rows_before_the_cut(tmp_path):
    """`datasets` writes Arrow streams of many batches; one cut short (a copy that stopped) keeps the
    batches before the cut and ends with a bad row, where it stopped the run as if the run directory
    could not be written."""
    table = pa.Table.from_pylist(RECORDS * 500)
    path = tmp_path / "data-00000-of-00001.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=100):
            writer.write_batch(batch)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    rows = list(iter_rows(path))
    assert rows[-1].record is None and rows[-1].error.startswith("file truncated or corrupt after row ")
    assert len(rows) > 100 and all(r.record in RECORDS for r in rows[:-1])
