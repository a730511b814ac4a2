"""The LLM call cache: a finished call is stored under a hash of (model, endpoint, prompt, schema,
sampling parameters, seed) in the run's `call_cache` table as soon as its model group returns, before
the batch commits. A batch lost to a crash, or redone after its outputs were deleted, replays the calls
it had already paid for. The fake backend is never cached (it costs nothing).

Every process that asks keeps an index of the keys in the segments it has read: a lookup lists the
table's folder, reads the key column of the segments new since its last lookup, and reads rows only from
the segments that hold a wanted key. A lookup so costs what was written since the last one, where a query
over every segment costs the whole cache, on every batch: quadratic in the run's calls (measured in
benchmarks/README.md, *Config changes*)."""
from __future__ import annotations

import json
import os

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from gra_stream.backends import ChatRequest, Completion
from gra_stream.config import ModelSpec
from gra_stream.ids import content_id
from gra_stream.store import EMPTY_SEGMENT

_COLUMNS = ["key", "text", "prompt_tokens", "completion_tokens", "finish_reason"]


def call_key(spec: ModelSpec, r: ChatRequest) -> str:
    # a non-default structured output or reasoning effort is a part of the key, the default is not: the keys
    # of the calls cached before they existed stay as they were
    other_mode = () if spec.structured_output == "json_schema" else (spec.structured_output,)
    effort = (f"reasoning_effort={spec.reasoning_effort}",) if spec.reasoning_effort else ()
    return content_id(spec.backend, spec.path, spec.url, spec.api_model, json.dumps(r.messages, sort_keys=True),
                      json.dumps(r.schema, sort_keys=True), r.max_tokens, r.temperature, r.top_p, r.seed,
                      r.repetition_penalty, *other_mode, *effort)


def key_numbers(keys: list[str]) -> np.ndarray:
    """Keys (16 hex digits each, as `content_id` makes them) as unsigned 64-bit integers."""
    return np.frombuffer(bytes.fromhex("".join(keys)), dtype=">u8").astype(np.uint64)


class CallCache:
    def __init__(self, store):
        self.store = store
        self.hits = 0
        self._names: list[str] = []                  # the segments indexed, by position
        self._seen: set[str] = set()
        self._keys = np.empty(0, dtype=np.uint64)    # every indexed key, sorted ...
        self._where = np.empty(0, dtype=np.int64)    # ... and the position of a segment that holds it

    def get(self, spec: ModelSpec, requests: list[ChatRequest]) -> dict[int, Completion]:
        """The cached completions of `requests`, by their position in it."""
        if not requests:
            return {}
        self._index_new_segments()
        if not len(self._keys):
            return {}
        keys = [call_key(spec, r) for r in requests]
        wanted = key_numbers(keys)
        at = np.minimum(np.searchsorted(self._keys, wanted), len(self._keys) - 1)
        found = self._keys[at] == wanted
        known = {k for k, f in zip(keys, found.tolist()) if f}
        rows: dict[str, Completion] = {}
        for segment in np.unique(self._where[at[found]]).tolist():
            rows.update(self._read(self._names[segment], known))
        hits = {i: rows[k] for i, k in enumerate(keys) if k in rows}
        self.hits += len(hits)
        return hits

    def put(self, spec: ModelSpec, requests: list[ChatRequest], completions: list[Completion]) -> None:
        rows = [{"key": call_key(spec, r), "text": c.text, "prompt_tokens": c.prompt_tokens,
                 "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason}
                for r, c in zip(requests, completions) if c.finish_reason != "error"]
        if rows:
            keys = [r["key"] for r in rows]
            path = self.store.write_segment("call_cache", content_id(*keys), pl.DataFrame(rows))
            self._add({path.name: key_numbers(keys)})

    def _index_new_segments(self) -> None:
        folder = self.store.table_dir("call_cache")
        try:  # names only, unsorted: `Store.segments` makes and sorts a Path per segment, on every lookup
            names = [e.name for e in os.scandir(folder) if e.name.endswith(".parquet")
                     and e.name != EMPTY_SEGMENT and e.name not in self._seen]
        except FileNotFoundError:
            return
        new = {}
        for name in names:
            try:
                new[name] = key_numbers(pq.read_table(folder / name, columns=["key"]).column("key").to_pylist())
            except FileNotFoundError:
                continue
        self._add(new)

    def _add(self, segments: dict[str, np.ndarray]) -> None:
        """Index the keys of new segments: merged into the sorted keys (a copy of the index, not a sort)."""
        if not segments:
            return
        keys = np.concatenate(list(segments.values()))
        where = np.concatenate([np.full(len(k), len(self._names) + n) for n, k in enumerate(segments.values())])
        self._names.extend(segments)
        self._seen.update(segments)
        order = np.argsort(keys, kind="stable")
        at = np.searchsorted(self._keys, keys[order])
        self._keys = np.insert(self._keys, at, keys[order])
        self._where = np.insert(self._where, at, where[order])

    def _read(self, name: str, keys: set[str]) -> dict[str, Completion]:
        try:
            table = pq.read_table(self.store.table_dir("call_cache") / name, columns=_COLUMNS)
        except FileNotFoundError:  # removed since it was indexed: its calls are asked again
            return {}
        return {k: Completion(t, p, c, f) for k, t, p, c, f in zip(*(table.column(c).to_pylist() for c in _COLUMNS))
                if k in keys}
