"""Structured LLM calls: render, send grouped by model, parse against a JSON schema, re-ask what fails.

A reply that still fails after `max_reasks` re-asks is returned as quarantined (raw text and error kept):
bad model output never fails a batch.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass

import fastjsonschema

from gra_stream.backends import REJECTED, ChatRequest, Completion
from gra_stream.backends.pool import ModelPool
from gra_stream.errors import UserError
from gra_stream.prompts import clip
from gra_stream.reply_schemas import once_per_schema

@dataclass(frozen=True)
class Calls:
    """A batch of structured calls, as columns: per call a model, a user prompt and a sampling seed; one
    system prompt, reply schema and token budget for the whole batch. Columns, not an object per call:
    a run makes millions of calls, and building an object for each is most of an LLM stage's own CPU."""
    models: list[str]
    users: list[str]
    seeds: list[int]
    system: str
    schema: dict
    max_tokens: int

    def __len__(self) -> int:
        return len(self.users)


class Replies:
    """The replies to a batch of `Calls`, in call order, as columns. `data[i]` is the parsed reply, or None
    when it never parsed (then `raw[i]` and `error[i]` say what came back and why it failed)."""

    def __init__(self, n: int):
        self.data: list[dict | None] = [None] * n
        self.raw, self.error = [""] * n, [""] * n
        self.prompt_tokens, self.completion_tokens, self.attempts, self.retries = [0] * n, [0] * n, [0] * n, [0] * n
        self.latency_s, self.wait_s, self.truncated = [0.0] * n, [0.0] * n, [False] * n

    def __len__(self) -> int:
        return len(self.data)

    def field(self, key: str) -> list:
        """The reply field `key` per call (None where the reply did not parse)."""
        return [None if d is None else d.get(key) for d in self.data]

    def scatter(self, rows: list[int], part: "Replies") -> None:
        """Put the replies of a sub-batch (`part`, one for each index in `rows`) in their places."""
        for name in ("data", "raw", "error", "prompt_tokens", "completion_tokens", "attempts", "retries",
                     "latency_s", "wait_s", "truncated"):
            mine = getattr(self, name)
            for i, value in zip(rows, getattr(part, name)):
                mine[i] = value

    def call_columns(self, models: list[str]) -> dict[str, list]:
        """The call accounting columns of every LLM-backed table (schemas.CALL_COLUMNS)."""
        ok = [d is not None for d in self.data]
        return {"model": models, "status": ["ok" if k else "quarantined" for k in ok], "error": self.error,
                "raw": [r if not k else "" for r, k in zip(self.raw, ok)], "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "latency_s": self.latency_s,
                "attempts": self.attempts, "truncated": self.truncated, "retries": self.retries,
                "wait_s": self.wait_s}

    def fold(self, i: int, done: Completion, schema: dict, max_tokens: int) -> bool:
        """Fold one completion into reply `i`; True when it parsed."""
        self.attempts[i] += 1
        self.prompt_tokens[i] += done.prompt_tokens
        self.completion_tokens[i] += done.completion_tokens
        self.latency_s[i] += done.latency_s
        self.retries[i] += done.retries
        self.wait_s[i] += done.wait_s
        self.raw[i] = done.text
        if done.finish_reason == "error":
            self.data[i], self.error[i] = None, f"no reply: {done.error}"
            return False
        data, error = parse_reply(done.text, schema)
        if done.finish_reason == "length":
            self.truncated[i] = True
            if data is None:
                error = f"reply cut at max_tokens ({max_tokens}): {error}"
        self.data[i], self.error[i] = data, error
        return data is not None


def schema_error(value, schema: dict, where: str = "reply") -> str:
    """The first way `value` breaks `schema`, in fastjsonschema's words ("reply.clarity must be smaller than or
    equal to 10"), or ''. Validators are generated once per schema."""
    try:
        _validator(schema)(value)
    except fastjsonschema.JsonSchemaValueException as e:
        return where + e.message.removeprefix("data")
    return ""


_validator = once_per_schema(fastjsonschema.compile)


def parse_reply(text: str, schema: dict) -> tuple[dict | None, str]:
    """The reply's JSON checked against `schema`, or None and why not. A reply that is not JSON as a whole
    is read from the object it wraps, if that parses (`wrapped_json`); otherwise its own error is given."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as e:
        error = f"not valid JSON ({e.msg} at char {e.pos})"  # a re-ask quotes it: its words are kept as they were
        inner = wrapped_json(text)
        try:
            value = json.loads(inner) if inner is not None else None
        except json.JSONDecodeError:
            value = None
        if value is None:
            return None, error
    err = schema_error(value, schema)
    return (None, err) if err else (value, "")


_THINKING = re.compile(r"\s*<think>.*?</think>", re.S)
_FENCED = re.compile(r"```[A-Za-z]*[ \t]*\n?(.*?)```", re.S)


def wrapped_json(text: str) -> str | None:
    """Where a model wraps its JSON, as models asked without a JSON-schema output do (structured_output
    json_object or none): after a leading <think> block (a reasoning model served without a reasoning
    parser), the first fenced code block, else the span from the first "{" to the last "}" (prose before
    or after the object). None where there is nothing of the kind."""
    if thinking := _THINKING.match(text):
        text = text[thinking.end():]
    if fenced := _FENCED.search(text):
        return fenced[1]
    first, last = text.find("{"), text.rfind("}")
    return text[first:last + 1] if 0 <= first < last else None


REASK = ("Your previous reply could not be used: {error}. Reply again with one JSON object that follows the "
         "requested format exactly, and nothing else.")


def _complete(pool: ModelPool, groups: dict[str, list[ChatRequest]]) -> dict[str, list[Completion]]:
    """Send each model's requests, every model at once (`ModelPool.complete`). Finished calls come from the
    call cache where it has them, and go into it otherwise."""
    cached = {m: pool.cache if pool.cache and pool.spec(m).backend != "fake" else None for m in groups}
    results: dict[str, list[Completion | None]] = {}
    missing: dict[str, list[int]] = {}
    for model, requests in groups.items():
        hits = cached[model].get(pool.spec(model), requests) if cached[model] else {}
        results[model] = [hits.get(i) for i in range(len(requests))]
        missing[model] = [i for i in range(len(requests)) if i not in hits]
    done = pool.complete({m: [groups[m][i] for i in missing[m]] for m in groups if missing[m]})
    for model, completions in done.items():
        for i, completion in zip(missing[model], completions):
            results[model][i] = completion
        if cached[model]:
            cached[model].put(pool.spec(model), [groups[model][i] for i in missing[model]], completions)
    return results


def ask(pool: ModelPool, calls: Calls, *, max_reasks: int) -> Replies:
    """Run every call, batching per model, re-asking failed parses; replies come back in call order."""
    replies = Replies(len(calls))
    system = {"role": "system", "content": calls.system}
    todo: list[int] | range = range(len(calls))
    for attempt in range(max_reasks + 1):
        by_model: dict[str, list[int]] = defaultdict(list)
        for i in todo:
            by_model[calls.models[i]].append(i)
        groups, budgets = {}, {}
        for model, indices in by_model.items():
            spec = pool.spec(model)
            budget = min(calls.max_tokens, spec.max_tokens) if spec.max_tokens else calls.max_tokens
            budget = budgets[model] = budget + spec.reasoning_tokens  # a reasoning model's reasoning counts in it
            sampling = (calls.schema, budget, spec.temperature, spec.top_p)
            groups[model] = [ChatRequest(_messages(system, calls.users[i], replies, i, attempt), *sampling,
                                         calls.seeds[i] + attempt, spec.repetition_penalty) for i in indices]
        results = _complete(pool, groups)
        if attempt == 0:
            _stop_if_all_rejected(pool, results)
        todo = [i for model, indices in by_model.items() for i, done in zip(indices, results[model])
                if not replies.fold(i, done, calls.schema, budgets[model])]
        if not todo:
            break
    return replies


def _stop_if_all_rejected(pool: ModelPool, results: dict[str, list[Completion]]) -> None:
    """One rejected request is its row's (a prompt over the context length), and is re-asked, then
    quarantined; a model's whole batch rejected at the first attempt is the config's (a parameter the
    endpoint does not take), and quarantining every row would lose them: the run stops instead."""
    for model, completions in results.items():
        if len(completions) > 1 and all(c.rejected for c in completions):
            raise UserError(f"model {model!r}: {pool.spec(model).url or pool.spec(model).backend} rejected all "
                            f"{len(completions)} requests of a batch ({completions[-1].error.removeprefix(REJECTED)}); "
                            f"it does not take requests as this model's config makes them (one without JSON-schema "
                            f"outputs takes structured_output = \"json_object\", an OpenAI reasoning model a reasoning_effort: "
                            f"docs/backends.md#openai-compatible-servers); "
                            f"the run stopped with what was committed before, and the same command resumes")


def _messages(system: dict, user: str, replies: Replies, i: int, attempt: int) -> tuple[dict, ...]:
    if attempt and replies.raw[i]:  # a reply that did not parse: show it and say what was wrong
        return (system, {"role": "user", "content": user}, {"role": "assistant", "content": clip(replies.raw[i], 2000)},
                {"role": "user", "content": REASK.format(error=replies.error[i])})
    return system, {"role": "user", "content": user}
