"""Streaming seed readers: JSONL (plain, .gz, .zst, .bz2, .xz), JSON arrays, Parquet, CSV and TSV (in
`delimited_rows`), and Arrow IPC (the files of a `datasets.save_to_disk` folder), one record at a time.

Each reader yields `Row(line, record, error)`: a row that cannot be read carries the reason instead of a
record, so one bad line never stops a file. Memory stays bounded for every format: JSON arrays too are
read an item at a time (ijson), as the hub's largest instruction sets ship as arrays.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from gra_stream.delimited_rows import DELIMITERS, delimited_rows
from gra_stream.errors import UserError
from gra_stream.pandas_layouts import pandas_rows
from gra_stream.seed_row import RAW_PREVIEW, Row
from gra_stream.text_files import (COMPRESSIONS, STREAM_ERRORS, delimited_encoding, open_binary, text_encoding,
                                   utf8_lines)

# Arrow IPC files under the names people give them: `datasets` and Arrow (.arrow), pandas' `to_feather`
# and R (.feather), Polars' `write_ipc` (.ipc), the stream format's own suffix (.arrows)
ARROW_SUFFIXES = (".arrow", ".feather", ".ipc", ".arrows")
SEED_TYPES = ".jsonl, .json, .parquet, .csv, .tsv, .arrow or .feather"  # for the errors that list them


# A file of bare JSON texts (a list of prompts, an array or one per line) holds instruction-only seeds:
# each text becomes a record with this one field.
PROMPT_FIELD = "instruction"
# A conversation given as a bare list of turns (a line of JSON Lines, an item of an array) becomes a
# record with its turns in this field, as OpenAI's chat format names them.
CHAT_FIELD = "messages"
TURN_KEYS = {"role", "from"}  # an object with one of these is a chat turn (OpenAI's, ShareGPT's)
FIRST_LINE_LIMIT = 1 << 20  # bytes of a first line read to tell JSON Lines of arrays from one JSON array


def detect_format(path: Path) -> str:
    name = path.name.lower()
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "json"
    if name.endswith(ARROW_SUFFIXES):
        return "arrow"
    raise UserError(f"{path}: unknown seed file type; use {SEED_TYPES} (text ones optionally .gz/.zst/.bz2/.xz), "
                    f"or give a folder of them")


def read_as(path: Path) -> str:
    """The encoding a seed file is read in where that is neither UTF-8 nor UTF-16, for the user to check."""
    return "Windows-1252" if detect_format(path) in DELIMITERS and delimited_encoding(path) == "cp1252" else ""


def iter_rows(path: Path) -> Iterator[Row]:
    fmt = detect_format(path)
    if fmt == "parquet":
        yield from _parquet_rows(path)
    elif fmt == "arrow":
        yield from _arrow_rows(path)
    elif fmt in DELIMITERS:
        yield from delimited_rows(path, fmt)
    else:
        yield from _json_rows(path)


def _decode(raw: bytes, line: int) -> tuple[str | None, str]:
    if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start}"


def _json_rows(path: Path) -> Iterator[Row]:
    """JSON Lines; or one JSON array (a file whose first character is '['), or one JSON object spread over
    lines whose records are in a list (`_document_records`), read an item at a time."""
    with open_binary(path) as binary:
        try:
            array = _first_character(binary) == "["
        except (OSError, EOFError, *STREAM_ERRORS) as e:  # cut or corrupt within its first block
            yield Row(1, None, f"file truncated or corrupt before its first line: {e}")
            return
    if array and not _lines_of_arrays(path):
        yield from _json_array_rows(path)
        return
    with open_binary(path) as binary, utf8_lines(binary) as f:
        line, first = 0, True
        try:
            for raw in f:
                line += 1
                if not raw.strip():
                    continue
                text, err = _decode(raw, line)
                if text is None:
                    yield Row(line, None, err, raw[:RAW_PREVIEW].decode("utf-8", "replace"))
                    continue
                row = _parse_json_object(text, line)
                if first and row.error.startswith("malformed") and text.lstrip().startswith("{"):
                    key = _document_records(path)  # not a line of JSON Lines: one object spread over lines?
                    if key is not None:
                        yield from _json_array_rows(path, key)
                        return
                table = pandas_rows(row.record) if first and row.record is not None else None
                first = False
                if table is not None:  # a DataFrame's to_json: its rows, numbered as the items of an array
                    yield from (Row(i, record) for i, record in enumerate(table, start=1))
                    continue
                yield row
        except (OSError, EOFError, *STREAM_ERRORS, UnicodeDecodeError) as e:  # truncated or corrupt stream
            yield Row(line + 1, None, f"file truncated or corrupt after line {line}: {e}")


def _first_character(binary) -> str:
    """The first character of a text stream that is not JSON whitespace (or a byte order mark)."""
    head = binary.peek(4096)[:4096]
    text = head.decode(text_encoding(binary), errors="replace")  # an undecodable first byte is not JSON
    return text.lstrip(" \t\r\n\ufeff")[:1]


def _lines_of_arrays(path: Path) -> bool:
    """Whether a file that starts with '[' is JSON Lines of arrays (a conversation's turns a line) rather
    than one JSON array: its first line alone is a whole array, and another line follows it."""
    with open_binary(path) as binary, utf8_lines(binary) as lines:
        read = (lambda: binary.readline(FIRST_LINE_LIMIT)) if lines is binary else (lambda: next(lines, b""))
        try:
            while (first := read()) and not first.strip():
                pass
            if not first.endswith(b"\n") or not isinstance(json.loads(first.removeprefix(b"\xef\xbb\xbf")), list):
                return False
            while (line := read()) and not line.strip():
                pass
        except (ValueError, RecursionError, OSError, EOFError, *STREAM_ERRORS):  # JSONDecodeError, UnicodeDecodeError
            return False
    return line.lstrip().startswith(b"[")


def _record(value) -> dict | None:
    """The record a JSON value gives: an object as it is, a text as an instruction-only seed, a list of
    chat turns as a conversation; None for anything else."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        return {PROMPT_FIELD: value}
    if isinstance(value, list) and value and all(isinstance(v, dict) and TURN_KEYS & {k.lower() for k in v}
                                                 for v in value):
        return {CHAT_FIELD: value}
    return None


def _parse_json_object(text: str, line: int) -> Row:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        return Row(line, None, f"malformed JSON: {e.msg if hasattr(e, 'msg') else 'nested too deeply'}",
                   text[:RAW_PREVIEW])
    record = _record(value)
    if record is None:
        return Row(line, None, f"expected a JSON object, a text or a list of turns, got {_kind(value)}",
                   text[:RAW_PREVIEW])
    return Row(line, record)


def _array_item(i: int, value) -> Row:
    record = _record(value)
    if record is None:
        return Row(i, None, f"array item {i} is {_kind(value)}, not an object, a text or a list of turns",
                   str(value)[:RAW_PREVIEW])
    return Row(i, record)


def _kind(value) -> str:
    return "an empty text" if isinstance(value, str) else type(value).__name__


class _Chunks:
    """A file-like `read(size)` over an iterator of byte strings (ijson reads at most `size` at a time)."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.buffer = chunks, b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        out, self.buffer = (self.buffer, b"") if size < 0 else (self.buffer[:size], self.buffer[size:])
        return out


@contextmanager
def _json_source(path: Path):
    """A JSON file as a file-like of UTF-8 bytes for ijson, a byte order mark dropped."""
    with open_binary(path) as binary, utf8_lines(binary) as lines:
        if lines is binary and binary.peek(3)[:3] == b"\xef\xbb\xbf":
            binary.read(3)  # JSON parsers refuse it
        yield binary if lines is binary else _Chunks(lines)


def _json_array_rows(path: Path, key: str = "") -> Iterator[Row]:
    """The items of a JSON array (the file, or the list at `key` of the object that is the file), streamed
    by ijson, so that memory stays bounded whatever the array's size (ijson's C parser is also faster than
    `json.loads` of the whole file). What ijson cannot read but Python's json can, such as the NaN that
    `json.dumps` writes for an empty pandas cell, is read whole from the item where ijson stopped; what
    neither can read ends the file with that item as a bad row."""
    import ijson

    done = 0
    try:
        with _json_source(path) as source:
            for value in ijson.items(source, f"{key}.item" if key else "item", use_float=True):
                done += 1
                yield _array_item(done, value)
        return
    except (ijson.JSONError, OSError, EOFError, *STREAM_ERRORS, UnicodeDecodeError) as e:
        message = e.args[0] if e.args else e
        streamed_error = (message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)).split("\n")[0][:200]
    values = _whole_json(path)
    if values is None:
        yield Row(done + 1, None, f"malformed JSON array after item {done}: {streamed_error}")
        return
    for i, value in enumerate((values[key] if key else values)[done:], start=done + 1):
        yield _array_item(i, value)


def _whole_json(path: Path):
    """The file parsed whole by Python's json (which reads NaN and Infinity), or None where it cannot."""
    try:
        with open_binary(path) as binary, utf8_lines(binary) as lines:
            return json.loads(b"".join(lines).removeprefix(b"\xef\xbb\xbf"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError, EOFError, *STREAM_ERRORS):
        return None


def _document_records(path: Path) -> str | None:
    """Where the records are in a file that holds one JSON object spread over lines (as `json.dump(...,
    indent=2)` writes `{"version": "1.0", "data": [{...}, ...]}`): the key of its list of objects; of
    several, `train`, else the longest. None when the file is not one JSON object or holds no such list
    (it is then read as JSON Lines, each line that is not an object a bad row). One streamed pass."""
    import ijson

    items: dict[str, int] = {}  # a top-level key holding a list -> the objects in it
    depth, key, list_key = 0, None, None
    try:
        with _json_source(path) as source:
            for event, value in ijson.basic_parse(source):  # no prefixes: a deep nest costs its length only
                if event in ("start_map", "start_array"):
                    if event == "start_map" and depth == 2 and list_key is not None and "." not in list_key:
                        items[list_key] = items.get(list_key, 0) + 1
                    list_key = key if event == "start_array" and depth == 1 else list_key
                    depth += 1
                elif event in ("end_map", "end_array"):
                    depth -= 1
                    list_key = None if depth == 1 else list_key
                elif event == "map_key" and depth == 1:
                    key = value
    except (ijson.JSONError, OSError, EOFError, *STREAM_ERRORS, UnicodeDecodeError):
        document = _whole_json(path)  # NaN or Infinity, which ijson refuses; else not one JSON document
        if not isinstance(document, dict):
            return None
        items = {k: sum(isinstance(x, dict) for x in v) for k, v in document.items() if "." not in k and isinstance(v, list)}
        items = {k: n for k, n in items.items() if n}
    if not items:
        return None
    return "train" if "train" in items else max(items, key=lambda k: (items[k], k))


def _parquet_rows(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise UserError(f"{path}: not a readable Parquet file ({e})") from None
    line = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            line += 1
            yield Row(line, record)


def _arrow_rows(path: Path) -> Iterator[Row]:
    """Arrow IPC: the stream format `datasets` writes, or the file format."""
    import pyarrow as pa

    try:
        source = pa.memory_map(str(path))
        try:
            batches = iter(pa.ipc.open_stream(source))
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{path}: not a readable Arrow file ({e})") from None
    line = 0
    try:
        for batch in batches:
            for record in batch.to_pylist():
                line += 1
                yield Row(line, record)
    except (pa.ArrowInvalid, OSError) as e:  # a stream cut short: the rows before the cut stand
        yield Row(line + 1, None, f"file truncated or corrupt after row {line}: {e}")


def get_path(record: Any, dotted: str) -> Any:
    """Follow a dotted path ("instances.0.output") through dicts and lists; None where it leads nowhere."""
    value = record
    for part in dotted.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value
