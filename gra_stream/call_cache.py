"""The LLM call cache: a finished call is stored under a hash of (model, endpoint, prompt, schema,
sampling parameters, seed) in the run's `call_cache` table as soon as its model group returns, before
the batch commits. A batch lost to a crash, or redone after its outputs were deleted, replays the calls
it had already paid for. The fake backend is never cached (it costs nothing)."""
from __future__ import annotations

import json

import polars as pl

from gra_stream.backends import ChatRequest, Completion
from gra_stream.config import ModelSpec
from gra_stream.ids import content_id


def call_key(spec: ModelSpec, r: ChatRequest) -> str:
    return content_id(spec.backend, spec.path, spec.url, spec.api_model, json.dumps(r.messages, sort_keys=True),
                      json.dumps(r.schema, sort_keys=True), r.max_tokens, r.temperature, r.top_p, r.seed,
                      r.repetition_penalty)


class CallCache:
    def __init__(self, store):
        self.store = store
        self._con = None
        self.hits = 0

    @property
    def con(self):
        """Opened on first use: a run of fake models never reads the cache."""
        if self._con is None:
            self._con = self.store.connect()
        return self._con

    def get(self, spec: ModelSpec, requests: list[ChatRequest]) -> dict[int, Completion]:
        keys = [call_key(spec, r) for r in requests]
        self.con.register("wanted", pl.DataFrame({"key": keys}).to_arrow())
        rows = self.con.sql("SELECT key, text, prompt_tokens, completion_tokens, finish_reason FROM call_cache "
                            "WHERE key IN (SELECT key FROM wanted)").fetchall()
        self.con.unregister("wanted")
        found = {k: Completion(t, p, c, f) for k, t, p, c, f in rows}
        hits = {i: found[k] for i, k in enumerate(keys) if k in found}
        self.hits += len(hits)
        return hits

    def put(self, spec: ModelSpec, requests: list[ChatRequest], completions: list[Completion]) -> None:
        rows = [{"key": call_key(spec, r), "text": c.text, "prompt_tokens": c.prompt_tokens,
                 "completion_tokens": c.completion_tokens, "finish_reason": c.finish_reason}
                for r, c in zip(requests, completions) if c.finish_reason != "error"]
        if rows:
            self.store.write_segment("call_cache", content_id(*(r["key"] for r in rows)), pl.DataFrame(rows))
