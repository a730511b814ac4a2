"""Exports of the kept samples: JSONL, Parquet, Alpaca, ShareGPT, chat messages and a Hugging Face dataset
folder.

Each format is one SELECT over `samples` that DuckDB copies straight to the file, so an export streams
whatever the size of the run. With `metadata`, every record also carries the score, domain, keywords,
summary, round, kind, how it was decided and its provenance (which model played which role).
"""
from __future__ import annotations

import os
from pathlib import Path

import duckdb

from gra_stream.errors import UserError
from gra_stream.memory import DUCKDB_MEMORY
from gra_stream.store import Store

# the columns of each format's records, as DuckDB select items over `samples`
COLUMNS = {
    "jsonl": "instruction, response",
    "parquet": "instruction, response",
    "hf": "instruction, response",
    "alpaca": "instruction, '' AS input, response AS output",
    "sharegpt": "[{'from': 'human', 'value': instruction}, {'from': 'gpt', 'value': response}] AS conversations",
    # OpenAI's fine-tuning files and TRL's conversational datasets
    "messages": "[{'role': 'user', 'content': instruction}, {'role': 'assistant', 'content': response}] AS messages",
}
FORMATS = tuple(COLUMNS)
KINDS = {"jsonl": "JSON", "alpaca": "JSON", "sharegpt": "JSON", "messages": "JSON", "parquet": "Parquet",
         "hf": "a dataset folder"}
BY_SUFFIX = {".jsonl": "jsonl", ".parquet": "parquet", ".json": "alpaca"}  # the format an output name implies
METADATA = ["id", "score", "domain", "keywords", "summary", "round", "kind", "decided_by", "generator", "reviewers",
            "adjudicator", "annotator", "seed_id"]
COPY_OPTIONS = {"JSON": "FORMAT JSON", "Parquet": "FORMAT PARQUET, COMPRESSION ZSTD"}


def export_format(fmt: str | None, out: Path) -> str:
    """The format to write: `fmt`, or the one `out`'s suffix implies. A name whose suffix says Parquet for
    a JSON format, or JSON for Parquet, is refused rather than written with content its name belies."""
    implied = BY_SUFFIX.get(out.suffix.lower())
    if fmt is None:
        if implied is None:
            table = (" (a CSV of the samples: gra-stream sql RUN_DIR 'SELECT * FROM samples' --format csv > FILE)"
                     if out.suffix.lower() in (".csv", ".tsv") else "")
            raise UserError(f"cannot tell the export format from the name {out.name!r}: name it .jsonl, .parquet "
                            f"or .json (Alpaca), or pass --format ({', '.join(FORMATS)}){table}")
        return implied
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if implied is not None and KINDS[fmt] != KINDS[implied]:
        raise UserError(f"--format {fmt} writes {KINDS[fmt]}, but the name {out.name!r} says {KINDS[implied]}: "
                        f"change the name or the format")
    return fmt


def export(store: Store, fmt: str | None, out: Path, *, metadata: bool = False) -> tuple[int, str]:
    """Write the samples to `out` in `fmt` (None: as its suffix implies), in id order; returns how many were
    written, and in which format. The file appears whole or not at all."""
    fmt = export_format(fmt, out)
    select = f"SELECT {COLUMNS[fmt]}{''.join(', ' + c for c in METADATA) if metadata else ''} FROM samples ORDER BY id"
    options = COPY_OPTIONS["JSON" if KINDS[fmt] == "JSON" else "Parquet"] + (", ARRAY true" if fmt == "alpaca" else "")
    target = out / "data" / "train-00000-of-00001.parquet" if fmt == "hf" else out
    partial = target.with_name(target.name + ".partial")
    con = store.connect(memory_limit=DUCKDB_MEMORY)  # the run's own limit: the sort by id spills to DIR/.tmp
    con.execute("SET preserve_insertion_order = true")  # the file in id order, as the ORDER BY says
    con.execute("SET threads = 1")  # a sort on more threads needs more memory than the limit, and is no faster here
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        n = con.execute(f"COPY ({select}) TO $path ({options})", {"path": str(partial)}).fetchone()[0]
        os.replace(partial, target)
        if fmt == "hf":
            _dataset_card(out, n, store)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    except duckdb.IOException as e:
        if str(partial) not in str(e):
            raise  # reading the run directory failed, not writing the file (see Store.read)
        raise UserError(f"cannot write {out}: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
        if partial.exists():
            partial.unlink()
    return n, fmt


def _dataset_card(out: Path, n: int, store: Store) -> None:
    """The README.md that makes OUT a dataset for `datasets.load_dataset(str(OUT))` (or
    `load_dataset("parquet", data_dir=OUT/data)`)."""
    (out / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n---\n"
        f"# GRA synthetic data\n\n{n} samples synthesised by gra-stream from the run at `{store.root}`, "
        "with a committee of small language models (generator, reviewers, adjudicator).\n", encoding="utf-8")
