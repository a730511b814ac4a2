"""Opening seed files as the bytes they hold: decompression (.gz, .zst, .bz2, .xz) and text encodings.

JSON is UTF-8 or, where a byte order mark says so, UTF-16 (as Windows tools save text). CSV and TSV are
also often saved by spreadsheets in the encoding of the user's Windows locale: `delimited_encoding`
reads such a file as Windows-1252 where it is not UTF-8 but decodes as that.
"""
from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import zlib
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

COMPRESSIONS = (".gz", ".zst", ".zstd", ".bz2", ".xz")
# what a truncated or corrupt compressed stream raises, beside OSError and EOFError
STREAM_ERRORS = (zlib.error, lzma.LZMAError)
UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
SCAN_BYTES = 1 << 20  # bytes decoded at a time when a delimited file's encoding is checked
UNKNOWN = "unknown"  # neither UTF-8 nor Windows-1252: read as UTF-8, each row with a byte it cannot decode a bad row


def open_binary(path: Path):
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    if name.endswith(".zst") or name.endswith(".zstd"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def text_encoding(f) -> str:
    """UTF-16 where the stream starts with its byte order mark (as Windows tools write text), else UTF-8."""
    return "utf-16" if f.peek(2)[:2] in UTF16_MARKS else "utf-8"


@contextmanager
def utf8_lines(f):
    """The lines of a text stream as UTF-8 bytes, whichever of UTF-8 and UTF-16 it is in."""
    if text_encoding(f) == "utf-8":
        yield f
        return
    with io.TextIOWrapper(f, encoding="utf-16", newline="") as text:
        yield (line.encode("utf-8") for line in text)


def delimited_encoding(path: Path) -> str:
    """The encoding a CSV or TSV file is read in: UTF-16 by its byte order mark; UTF-8 (a mark dropped)
    where every byte decodes as it; else Windows-1252, as spreadsheets save "CSV" on Western-locale
    Windows, where every byte decodes as that; else UNKNOWN."""
    stat = path.stat()
    return _delimited_encoding(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _delimited_encoding(path: Path, size: int, mtime_ns: int) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        with open_binary(path) as f:
            try:
                if f.peek(2)[:2] in UTF16_MARKS:
                    return "utf-16"
                if _decodes(f, encoding):
                    return encoding
            except (OSError, EOFError, *STREAM_ERRORS):  # truncated or corrupt: the reader says where it ends
                return encoding
    return UNKNOWN


def _decodes(f, encoding: str) -> bool:
    """Whether the rest of the stream decodes in `encoding`."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        while chunk := f.read(SCAN_BYTES):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True
