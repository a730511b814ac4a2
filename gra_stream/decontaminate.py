"""Decontamination: drop samples that share a long word n-gram (13 by default) with a benchmark's
test set, so synthetic data never teaches the test. Reference files are seed-like files (any format
and field names the readers understand); their instruction, input and response texts all count."""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

import polars as pl

from gra_stream.config import Decontamination, Fields
from gra_stream.resources import reference_path
from gra_stream.errors import UserError
from gra_stream.fields import extract, resolve_mapping
from gra_stream.readers import iter_rows

_WORD = re.compile(r"\w+")


def ngram_hashes(text: str, n: int) -> set[int]:
    words = _WORD.findall(text.lower())
    return {int.from_bytes(hashlib.blake2b(" ".join(words[i:i + n]).encode(), digest_size=8).digest(), "little")
            for i in range(len(words) - n + 1)}


@lru_cache(maxsize=4)
def _reference(path: str, mtime_ns: int, n: int) -> frozenset[int]:
    hashes: set[int] = set()
    mapping = None
    for row in iter_rows(Path(path)):
        if row.record is None:
            continue
        mapping = mapping or resolve_mapping(row.record, Fields(), Path(path))
        texts, _ = extract(row.record, mapping)
        for text in texts or ():
            hashes |= ngram_hashes(text, n)
    return frozenset(hashes)


def reference_sets(paths: tuple[str, ...], n: int) -> list[tuple[str, frozenset[int]]]:
    out = []
    for p in paths:
        path = reference_path(p)
        if not path.is_file():
            raise UserError(f"decontamination reference {p} does not exist")
        out.append((p, _reference(str(path.resolve()), path.stat().st_mtime_ns, n)))
    return out


def contamination_drops(batch: pl.DataFrame, decontamination: Decontamination) -> dict[str, tuple[str, str]]:
    """The gate's decontamination filter: id -> (reason, detail) of each row whose instruction and
    response share a word n-gram with a reference test set."""
    if not decontamination.references or batch.is_empty():
        return {}
    references = reference_sets(decontamination.references, decontamination.ngram)
    drops = {}
    for id_, instruction, response in batch.select("id", "instruction", "response").iter_rows():
        hit = contaminated(f"{instruction}\n{response}", references, decontamination.ngram)
        if hit:
            drops[id_] = ("contaminated", f"shares a {decontamination.ngram}-gram with {hit}")
    return drops


def contaminated(text: str, references: list[tuple[str, frozenset[int]]], n: int) -> str:
    """The reference a text shares an n-gram with, or ''."""
    grams = ngram_hashes(text, n)
    for name, hashes in references:
        if grams & hashes:
            return name
    return ""
