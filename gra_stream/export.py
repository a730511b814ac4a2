"""Exports of the kept samples: JSONL, Parquet, Alpaca, ShareGPT and a Hugging Face dataset folder.

With `metadata`, every record also carries the score, domain, keywords, summary, round, kind, how it
was decided and its provenance (which model played which role).
"""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from gra_stream.errors import UserError
from gra_stream.store import Store

FORMATS = ("jsonl", "parquet", "alpaca", "sharegpt", "hf")
KINDS = {"jsonl": "JSON", "alpaca": "JSON", "sharegpt": "JSON", "parquet": "Parquet", "hf": "a dataset folder"}
BY_SUFFIX = {".jsonl": "jsonl", ".parquet": "parquet", ".json": "alpaca"}  # the format an output name implies
METADATA = ["id", "score", "domain", "keywords", "summary", "round", "kind", "decided_by", "generator", "reviewers",
            "adjudicator", "annotator", "seed_id"]


def read_samples(store: Store) -> pl.DataFrame:
    return store.connect().sql("SELECT * FROM samples ORDER BY id").pl()


def _records(samples: pl.DataFrame, fmt: str, metadata: bool) -> list[dict]:
    out = []
    for row in samples.iter_rows(named=True):
        meta = {k: row[k] for k in METADATA} if metadata else {}
        if fmt == "alpaca":
            out.append({"instruction": row["instruction"], "input": "", "output": row["response"], **meta})
        elif fmt == "sharegpt":
            out.append({"conversations": [{"from": "human", "value": row["instruction"]},
                                          {"from": "gpt", "value": row["response"]}], **meta})
        else:
            out.append({"instruction": row["instruction"], "response": row["response"], **meta})
    return out


def export_format(fmt: str | None, out: Path) -> str:
    """The format to write: `fmt`, or the one `out`'s suffix implies. A name whose suffix says Parquet for
    a JSON format, or JSON for Parquet, is refused rather than written with content its name belies."""
    implied = BY_SUFFIX.get(out.suffix.lower())
    if fmt is None:
        if implied is None:
            raise UserError(f"cannot tell the export format from the name {out.name!r}: name it .jsonl, .parquet "
                            f"or .json (Alpaca), or pass --format ({', '.join(FORMATS)})")
        return implied
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if implied is not None and KINDS[fmt] != KINDS[implied]:
        raise UserError(f"--format {fmt} writes {KINDS[fmt]}, but the name {out.name!r} says {KINDS[implied]}: "
                        f"change the name or the format")
    return fmt


def export(store: Store, fmt: str | None, out: Path, *, metadata: bool = False) -> tuple[int, str]:
    """Write the samples to `out` in `fmt` (None: as its suffix implies); returns how many were written,
    and in which format."""
    fmt = export_format(fmt, out)
    samples = read_samples(store)
    records = _records(samples, fmt, metadata)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt in ("jsonl", "sharegpt"):
            with open(out, "w", encoding="utf-8") as f:
                for r in records:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        elif fmt == "alpaca":
            out.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
        elif fmt == "parquet":
            _frame(records).write_parquet(out)
        else:
            _hf(records, out, store)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    return len(records), fmt


def _frame(records: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(records, infer_schema_length=None) if records else pl.DataFrame(
        {"instruction": [], "response": []}, schema={"instruction": pl.String, "response": pl.String})


def _hf(records: list[dict], out: Path, store: Store) -> None:
    """A dataset folder for `datasets.load_dataset("parquet", data_dir=OUT)` (or `load_dataset(str(OUT))`):
    data/train-00000-of-00001.parquet and a dataset card."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    _frame(records).write_parquet(out / "data" / "train-00000-of-00001.parquet")
    (out / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n---\n"
        f"# GRA synthetic data\n\n{len(records)} samples synthesised by gra-stream from the run at `{store.root}`, "
        "with a committee of small language models (generator, reviewers, adjudicator).\n", encoding="utf-8")
