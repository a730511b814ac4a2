"""Declared columns of every table in the run directory (the contract between stages, runner and SQL)."""
import functools

import polars as pl
import pyarrow as pa

S, I, F, B = pa.string(), pa.int64(), pa.float64(), pa.bool_()
STRS = pa.list_(pa.string())
VEC = pa.list_(pa.float32())

SCORE_DIMS = ("correctness", "clarity", "completeness", "relevance", "coherence", "ethics")
CHECKS = ("reasonable", "complete", "clear")
DOMAINS = ("coding", "math", "question answering", "reasoning", "role-play", "language", "creative writing")

# Every LLM-backed row records the call that made it: who, what it cost, and whether it parsed.
CALL_COLUMNS = [
    ("model", S), ("status", S), ("error", S), ("raw", S), ("prompt_tokens", I), ("completion_tokens", I),
    ("latency_s", F), ("attempts", I), ("truncated", B), ("retries", I), ("wait_s", F),
]


def _schema(*cols):
    return pa.schema([pa.field(n, t) for n, t in cols])


def empty(schema: pa.Schema) -> pa.Table:
    """A table with no rows. (`schema.empty_table()` would import pandas, which slows every start.)"""
    return pa.Table.from_batches([], schema=schema)


TABLES: dict[str, pa.Schema] = {
    "seeds": _schema(("id", S), ("instruction", S), ("input", S), ("response", S), ("source", S), ("line", I)),
    "ingest_errors": _schema(("id", S), ("source", S), ("line", I), ("reason", S), ("raw", S)),
    "files": _schema(("id", S), ("path", S), ("bytes", I), ("rows", I), ("seeds", I), ("duplicates", I),
                     ("bad_rows", I), ("mapping", S)),
    "profiles": _schema(("id", S), ("domain", S), ("keywords", STRS), ("summary", S), *CALL_COLUMNS),
    "generations": _schema(("id", S), ("anchor_id", S), ("seed_id", S), ("round", I), ("kind", S), ("example_ids", STRS), ("domain", S), ("generator", S),
                           ("reviewers", STRS), ("adjudicator", S), ("keywords", STRS), ("instruction", S),
                           ("response", S), *CALL_COLUMNS),
    "gates": _schema(("id", S), ("passed", B), ("reason", S), ("detail", S), ("duplicate_of", S),
                     ("minhash", pa.list_(pa.uint32())), ("bands", pa.list_(pa.uint64()))),
    "reviews": _schema(("id", S), ("generation_id", S), ("reviewer_index", I), *[(c, B) for c in CHECKS],
                       *[(d, I) for d in SCORE_DIMS], ("mean", F), ("strengths", S), ("weaknesses", S),
                       *CALL_COLUMNS),
    "verdicts": _schema(("id", S), ("n_reviews", I), ("mean", F), ("std", F), ("decision", S), ("reason", S)),
    "adjudications": _schema(("id", S), *[(d, I) for d in SCORE_DIMS], ("mean", F), ("keep", B), ("comment", S),
                             *CALL_COLUMNS),
    "seed_embeddings": _schema(("id", S), ("embedding", VEC)),
    "diversity": _schema(("id", S), ("kept", B), ("similarity", F), ("duplicate_of", S), ("embedding", VEC)),
    "annotations": _schema(("id", S), ("domain", S), ("keywords", STRS), ("summary", S), *CALL_COLUMNS),
    "samples": _schema(("id", S), ("seed_id", S), ("anchor_id", S), ("round", I), ("kind", S), ("instruction", S),
                       ("response", S), ("domain", S), ("keywords", STRS), ("summary", S), ("score", F),
                       ("decided_by", S), ("generator", S), ("reviewers", STRS), ("adjudicator", S),
                       ("annotator", S)),
    "call_cache": _schema(("key", S), ("text", S), ("prompt_tokens", I), ("completion_tokens", I),
                          ("finish_reason", S)),
    "runs": _schema(("id", S), ("started", S), ("finished", S), ("elapsed_s", F), ("outcome", S),
                    ("config", S), ("seed_files", STRS), ("tables_digest", S), ("versions", S)),
}


@functools.cache
def polars_types(table: str) -> pl.Schema:
    """`table`'s declared columns and their Polars types."""
    return pl.from_arrow(empty(TABLES[table])).schema
