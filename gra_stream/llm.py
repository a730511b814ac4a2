"""Structured LLM calls: render, send grouped by model, parse against a JSON schema, re-ask what fails.

A reply that still fails after `max_reasks` re-asks is returned as quarantined (raw text and error kept):
bad model output never fails a batch.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gra_stream.backends import ChatRequest, Completion, ModelPool
from gra_stream.reply_schemas import once_per_schema

PROMPTS = Path(__file__).resolve().parent / "prompts"
_SLOT = re.compile(r"\{\{(\w+)\}\}")


def render(template: str, values: dict[str, object]) -> str:
    """Fill {{name}} slots in one pass: text inside values is never re-read as template syntax."""
    def fill(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"template slot {{{{{m.group(1)}}}}} has no value")
        return str(values[m.group(1)])

    return _SLOT.sub(fill, template)


# The slots each prompt is rendered with; a user's template may use any of them and no others.
PROMPT_SLOTS = {
    "system": set(),
    "profile": {"instruction", "response"},
    "generate": {"domain", "keywords_1", "summary_1", "keywords_2", "summary_2"},
    "refine": {"domain", "instruction", "response"},
    "review": {"instruction", "response"},
    "adjudicate": {"instruction", "response", "reviews"},
}


def prompt_path(name: str, prompts_dir: str = "") -> Path:
    """The user's NAME.txt in `prompts_dir` if there is one, else the bundled template."""
    if prompts_dir and (Path(prompts_dir) / f"{name}.txt").exists():
        return Path(prompts_dir) / f"{name}.txt"
    return PROMPTS / f"{name}.txt"


def load_prompt(name: str, prompts_dir: str = "") -> str:
    return prompt_path(name, prompts_dir).read_text(encoding="utf-8")


def check_prompts(prompts_dir: str, source: str) -> None:
    """Every template reads and uses only its known slots: checked before any model loads."""
    from gra_stream.errors import UserError

    if prompts_dir and not Path(prompts_dir).is_dir():
        raise UserError(f"{source}: prompts_dir = {prompts_dir!r} is not a folder")
    for name, slots in PROMPT_SLOTS.items():
        path = prompt_path(name, prompts_dir)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read the prompt template ({e})") from None
        unknown = sorted(set(_SLOT.findall(text)) - slots)
        if unknown:
            raise UserError(f"{path}: unknown slot {{{{{unknown[0]}}}}}; this prompt can use: "
                            f"{', '.join('{{' + s + '}}' for s in sorted(slots)) or 'no slots'}")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


@dataclass(frozen=True)
class Call:
    model: str
    system: str
    user: str
    schema: dict
    max_tokens: int
    seed: int


@dataclass
class Reply:
    data: dict | None
    raw: str
    error: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 0
    truncated: bool = False
    retries: int = 0

    @property
    def ok(self) -> bool:
        return self.data is not None

    def call_columns(self, model: str) -> dict:
        return {"model": model, "status": "ok" if self.ok else "quarantined", "error": self.error,
                "raw": self.raw if not self.ok else "", "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "latency_s": self.latency_s,
                "attempts": self.attempts, "truncated": self.truncated, "retries": self.retries}


def schema_error(value, schema: dict, where: str = "reply") -> str:
    """The first way `value` breaks `schema` (the subset of JSON Schema our prompts use), or ''."""
    found = _checker(schema)(value)
    return "" if found is None else where + found


def _compile(schema: dict) -> Callable[[object], str | None]:
    """`schema` compiled into a function value -> what is wrong after the reply's name (the path to the
    field, then the fault), or None: checking a reply is then a few type tests per field, not a walk of
    the schema's dicts (2.5 us against 4.1 us a review reply). `_checker` makes it once per schema."""
    check = _compile_kind(schema)
    if "enum" not in schema:
        return check
    options = schema["enum"]

    def check_enum(value):
        if value not in options:
            return f" = {value!r} is not one of {options}"
        return check(value)
    return check_enum


def _compile_kind(schema: dict) -> Callable[[object], str | None]:
    kind = schema.get("type")
    if kind == "object":
        required = tuple(schema.get("required", []))
        fields = tuple((key, _compile(sub)) for key, sub in schema.get("properties", {}).items())

        def check_object(value):
            if not isinstance(value, dict):
                return " is not an object"
            for key in required:
                if key not in value:
                    return f" lacks {key!r}"
            for key, check in fields:
                if key in value:
                    found = check(value[key])
                    if found is not None:
                        return f".{key}{found}"
            return None
        return check_object
    if kind == "array":
        low, high, check_item = schema.get("minItems", 0), schema.get("maxItems", 1 << 30), _compile(schema.get("items", {}))

        def check_array(value):
            if not isinstance(value, list):
                return " is not an array"
            if len(value) < low or len(value) > high:
                return f" has {len(value)} items"
            for i, item in enumerate(value):
                found = check_item(item)
                if found is not None:
                    return f"[{i}]{found}"
            return None
        return check_array
    if kind == "integer":
        low, high = schema.get("minimum", -1 << 62), schema.get("maximum", 1 << 62)

        def check_integer(value):
            if not isinstance(value, int) or isinstance(value, bool):
                return f" = {value!r} is not an integer"
            if not low <= value <= high:
                return f" = {value} is out of range"
            return None
        return check_integer
    if kind == "boolean":
        return lambda value: None if isinstance(value, bool) else f" = {value!r} is not true/false"
    if kind == "string":
        non_empty = schema.get("minLength", 0) > 0

        def check_string(value):
            if not isinstance(value, str):
                return " is not a string"
            if non_empty and not value.strip():
                return " is empty"
            return None
        return check_string
    return lambda value: None


_checker = once_per_schema(_compile)


def parse_reply(text: str, schema: dict) -> tuple[dict | None, str]:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at char {e.pos})"
    err = schema_error(value, schema)
    return (None, err) if err else (value, "")


REASK = ("Your previous reply could not be used: {error}. Reply again with one JSON object that follows the "
         "requested format exactly, and nothing else.")


def _apply(reply: Reply, done: Completion, call: Call, max_tokens: int) -> bool:
    """Fold one completion into its reply; True when it parsed."""
    reply.attempts += 1
    reply.prompt_tokens += done.prompt_tokens
    reply.completion_tokens += done.completion_tokens
    reply.latency_s += done.latency_s
    reply.truncated = reply.truncated or done.finish_reason == "length"
    reply.retries += done.retries
    reply.raw = done.text
    reply.data, reply.error = parse_reply(done.text, call.schema)
    if done.finish_reason == "error":
        reply.data, reply.error = None, f"no reply: {done.error}"
    elif reply.data is None and done.finish_reason == "length":
        reply.error = f"reply cut at max_tokens ({max_tokens}): {reply.error}"
    return reply.data is not None


def _complete(pool: ModelPool, groups: dict[str, list[ChatRequest]]) -> dict[str, list[Completion]]:
    """Send each model's requests; HTTP endpoints all at once (every server kept busy), engines in turn.
    Finished calls come from the call cache where it has them, and go into it otherwise."""
    cached = {m: pool.cache if pool.cache and pool.spec(m).backend != "fake" else None for m in groups}
    results: dict[str, list[Completion | None]] = {}
    missing: dict[str, list[int]] = {}
    for model, requests in groups.items():
        hits = cached[model].get(pool.spec(model), requests) if cached[model] else {}
        results[model] = [hits.get(i) for i in range(len(requests))]
        missing[model] = [i for i in range(len(requests)) if i not in hits]

    def fresh(model: str) -> list[Completion]:
        return pool.backend(model).complete([groups[model][i] for i in missing[model]])

    # engines already loaded go first, so a pool that cannot hold every engine swaps as little as possible
    todo = sorted((m for m in groups if missing[m]), key=lambda m: not pool.loaded(m))
    parallel = [m for m in todo if pool.spec(m).backend == "openai"]  # servers can all work at once
    done: dict[str, list[Completion]] = {}
    if len(parallel) > 1:
        with ThreadPoolExecutor(max_workers=len(parallel)) as workers:
            done.update(zip(parallel, workers.map(fresh, parallel)))
    for model in todo:
        if model not in done:
            done[model] = fresh(model)
    for model, completions in done.items():
        for i, completion in zip(missing[model], completions):
            results[model][i] = completion
        if cached[model]:
            cached[model].put(pool.spec(model), [groups[model][i] for i in missing[model]], completions)
    return results


def ask(pool: ModelPool, calls: list[Call], *, max_reasks: int) -> list[Reply]:
    """Run every call, batching per model, re-asking failed parses; replies come back in call order."""
    replies = [Reply(None, "", "") for _ in calls]
    todo = list(range(len(calls)))
    for attempt in range(max_reasks + 1):
        by_model: dict[str, list[int]] = defaultdict(list)
        for i in todo:
            by_model[calls[i].model].append(i)
        groups = {}
        for model, indices in by_model.items():
            spec = pool.spec(model)
            requests = []
            for i in indices:
                c = calls[i]
                messages = [{"role": "system", "content": c.system}, {"role": "user", "content": c.user}]
                if attempt and replies[i].raw:  # a reply that did not parse: show it and say what was wrong
                    messages += [{"role": "assistant", "content": clip(replies[i].raw, 2000)},
                                 {"role": "user", "content": REASK.format(error=replies[i].error)}]
                max_tokens = min(c.max_tokens, spec.max_tokens) if spec.max_tokens else c.max_tokens
                requests.append(ChatRequest(tuple(messages), c.schema, max_tokens, spec.temperature,
                                            spec.top_p, c.seed + attempt, spec.repetition_penalty))
            groups[model] = requests
        results = _complete(pool, groups)
        todo = [i for model, indices in by_model.items()
                for i, request, done in zip(indices, groups[model], results[model])
                if not _apply(replies[i], done, calls[i], request.max_tokens)]
        if not todo:
            break
    return replies
