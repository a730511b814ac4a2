"""CSV and TSV seed files as spreadsheets and scripts write them: the encoding (`text_files`), the separator
(a semicolon where the comma is the decimal mark), repeated header names, and TSV quotes that are text.
"""
from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from gra_stream.seed_row import RAW_PREVIEW, Row
from gra_stream.text_files import STREAM_ERRORS, UNKNOWN, delimited_encoding, open_binary


DELIMITERS = {"csv": ",", "tsv": "\t"}  # the delimited text formats and their separators


def delimited_rows(path: Path, fmt: str) -> Iterator[Row]:
    """The rows of a CSV or TSV file (`fmt`), the header's names as keys."""
    csv.field_size_limit(1 << 30)
    encoding = delimited_encoding(path)
    codec = "utf-8-sig" if encoding == UNKNOWN else encoding
    with open_binary(path) as f:
        try:
            delimiter = _delimiter(f, fmt, codec)
        except (OSError, EOFError, *STREAM_ERRORS) as e:  # cut or corrupt within its first block
            yield Row(1, None, f"file truncated or corrupt before its first line: {e}")
            return
        text = io.TextIOWrapper(f, encoding=codec, errors="replace" if encoding == UNKNOWN else "strict", newline="")
        quoting = csv.QUOTE_NONE if fmt == "tsv" and not quoted_tsv(path, codec) else csv.QUOTE_MINIMAL
        reader = csv.DictReader(text, delimiter=delimiter, quoting=quoting)
        row_number = 0
        while True:
            try:
                if row_number == 0 and reader.line_num == 0:
                    reader.fieldnames = _unique_names(reader.fieldnames or [])
                record = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as e:
                yield Row(row_number + 1, None, f"invalid {encoding} ({e.reason}); the rest of the file is skipped")
                return
            except (csv.Error, OSError, EOFError, *STREAM_ERRORS) as e:
                yield Row(row_number + 1, None, f"unreadable {fmt.upper()}: {e}")
                return
            row_number += 1
            if None in record:  # more cells than header columns
                yield Row(row_number, None, "row has more cells than the header", str(record)[:RAW_PREVIEW])
                continue
            if encoding == UNKNOWN and any("\ufffd" in v for v in record.values() if isinstance(v, str)):
                yield Row(row_number, None, "neither UTF-8 nor Windows-1252: convert the file to UTF-8 "
                                            "(iconv -f ITS_ENCODING -t UTF-8)", str(record)[:RAW_PREVIEW])
                continue
            yield Row(row_number, record)


def quoted_tsv(path: Path, codec: str) -> bool:
    """Whether a TSV file's quotes all follow CSV's rules (as pandas' `to_csv(sep="\\t")` writes fields that
    hold a tab, a quote or a line break), so that they are read as quoting. Else, as in most TSV files (the
    IANA format has no quoting), a quote is a character of its field: `"Hi," she said.` stays as written,
    and an unpaired one does not join the rest of the file into one field."""
    stat = path.stat()
    return _quoted_tsv(path, codec, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _quoted_tsv(path: Path, codec: str, size: int, mtime_ns: int) -> bool:
    try:
        with open_binary(path) as f, io.TextIOWrapper(f, encoding=codec, errors="replace", newline="") as text:
            for _ in csv.reader(text, delimiter="\t", strict=True):
                pass
    except csv.Error:
        return False
    except (OSError, EOFError, *STREAM_ERRORS):
        pass  # the reader says where the file ends
    return True


def _delimiter(f, fmt: str, encoding: str) -> str:
    """The format's separator; for CSV a semicolon where the header line has semicolons and no comma, as
    spreadsheets write CSV in locales whose decimal mark is the comma."""
    if fmt != "csv":
        return DELIMITERS[fmt]
    header = f.peek(65536)[:65536].decode(encoding, errors="ignore").splitlines()[:1]
    return ";" if header and ";" in header[0] and "," not in header[0] else ","


def _unique_names(names: list[str]) -> list[str]:
    """A header's column names with repeats renamed `name_1`, `name_2`... (as DuckDB names them), so that
    no column's cells are lost to a later one of the same name. Unnamed columns stay as they are."""
    seen = set(names)
    out = []
    for name in names:
        if name in out and name:
            k = 1
            while f"{name}_{k}" in seen:
                k += 1
            name = f"{name}_{k}"
            seen.add(name)
        out.append(name)
    return out
