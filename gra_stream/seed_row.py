"""A row of a seed file as every reader yields it: its line (or item) number and its record, or the
reason it could not be read instead."""
from __future__ import annotations

from dataclasses import dataclass

RAW_PREVIEW = 300  # characters of a bad row kept for the error table


@dataclass(frozen=True)
class Row:
    line: int
    record: dict | None
    error: str = ""
    raw: str = ""
