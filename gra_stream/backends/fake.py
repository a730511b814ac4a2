"""A deterministic fake model: every reply is derived from a hash of (model, prompt, seed) and from the
content words of the task (the first user message), so replies to similar tasks resemble each other.

Replies follow the request's JSON schema, but are varied on purpose so that a fake run walks every path
of the pipeline: good and bad scores, disagreeing reviewers, failed instruction checks, refusals, very
short and copied responses, exact duplicates, truncated replies and plain garbage that must be re-asked.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
import time
from functools import lru_cache
from itertools import chain, product
from json.encoder import encode_basestring

import numpy as np

from gra_stream.backends import ChatRequest, Completion
from gra_stream.reply_schemas import once_per_schema

REFUSAL = "I'm sorry, but I cannot help with that request."
# Instructions open with one of these and go on with the prompt's own words: like a real model's tasks,
# two instructions share little text unless they come from similar prompts. (With fixed sentence templates
# many fake tasks would share most of their characters, and benchmarks would measure the templates'
# near-duplicates instead of the pipeline.)
OPENERS = ("Explain", "Describe", "Compare", "Summarize", "List the steps to", "Write a short guide on",
           "Give an example of", "Outline", "Suggest ways to improve", "Classify", "Evaluate", "Define",
           "Write a poem about", "Plan", "Rewrite in plain words:", "Answer a question about")


DRAWS = 48  # numbers drawn per reply at once (a synthesis reply takes 41); more come from a SHA-256 chain
_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _draws(digests: list[bytes]) -> list[list[float]]:
    """DRAWS numbers in [0, 1) per digest, for a whole batch at once: splitmix64 of the digest's first 8
    bytes plus a counter (a hash per number, in numpy, not one SHA-256 per eight numbers per reply)."""
    seeds = np.frombuffer(b"".join(d[:8] for d in digests), dtype=">u8").astype(np.uint64)
    with np.errstate(over="ignore"):
        z = seeds[:, None] + np.arange(1, DRAWS + 1, dtype=np.uint64) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z ^= z >> np.uint64(31)
    return ((z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53).tolist()


def _blocks(state: bytes):
    """What a reply draws beyond DRAWS: eight numbers per digest, then the digest of the digest, and so on."""
    while True:
        state = hashlib.sha256(state).digest()
        yield [v / 4294967296 for v in struct.unpack(">8I", state)]


def _template_words() -> set[str]:
    from gra_stream.prompts import PROMPTS

    return {w.lower() for p in PROMPTS.glob("*.txt") for w in re.findall(r"[A-Za-z][A-Za-z-]+", p.read_text())}


_TEMPLATE_WORDS = _template_words()
# Content words are runs of ASCII letters and hyphens that start with a letter, 4 characters or more
# (the regex [A-Za-z][A-Za-z-]{3,}). They are found on bytes, where one C-level translate lowercases the
# letters and blanks every other byte (a non-ASCII character is encoded as "?", which is blanked), cheaper
# than the regex on every prompt of a run.
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-"
_WORD_BYTES = bytes(b if b in _LETTERS else 32 for b in range(256)).translate(
    bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz"))
# What is not a content word: the templates' words and every run of 1 to 3 of those bytes (20,439 of
# them), so that one C-level set difference drops the short words too, instead of a test per word.
_NOT_CONTENT = frozenset(w.encode("ascii") for w in _TEMPLATE_WORDS) | frozenset(
    bytes(run) for n in (1, 2, 3) for run in product(b"abcdefghijklmnopqrstuvwxyz-", repeat=n))
# The words come from the task's first WINDOW words (at most WINDOW_CHARS characters): the start of a
# template and what is filled into it, not the closing instructions every prompt of a role shares. A
# whole prompt took a fifth of a fake run's CPU to read, word by word.
WINDOW, WINDOW_CHARS = 64, 1024


@lru_cache(maxsize=4096)  # the reviewers of one sample are sent the same task
def _words(text: str) -> tuple[str, ...]:
    """The content words (not the templates') among the first WINDOW words of `text`, longest first (ties
    in alphabetical order), at most 12."""
    data = b" " + text[:WINDOW_CHARS].encode("ascii", "replace").translate(_WORD_BYTES)
    while b" -" in data:  # a word starts with a letter: drop the hyphens that open a run
        data = data.replace(b" -", b" ")
    tokens = data.split(None, WINDOW)
    if len(tokens) > WINDOW or (len(text) > WINDOW_CHARS and tokens):
        tokens.pop()  # the rest of the text, or a word the character window may have cut
    words = set(tokens) - _NOT_CONTENT
    return tuple(w.decode("ascii") for w in sorted(sorted(words), key=len, reverse=True)[:12]) or (
        "topic", "example", "detail")

class FakeBackend:
    def __init__(self, name: str, *, latency_s: float = 0.0, record: bool = False):
        self.name = name
        self.latency_s = latency_s
        self.waits = latency_s > 0  # with a latency it stands in for a model: the pool runs it beside the others
        self.record = record
        self.history: list[ChatRequest] = []  # every request, with record=True (tests); unbounded, so off in runs

    def close(self) -> None:
        pass

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        if self.record:
            self.history.extend(requests)
        if self.latency_s:
            time.sleep(self.latency_s)
        prompts = ["\n".join([m["content"] for m in r.messages]) for r in requests]
        digests = [hashlib.sha256(f"{self.name}\x1f{p}\x1f{r.seed}".encode("utf-8", "surrogatepass")).digest()
                   for r, p in zip(requests, prompts)]
        return [_reply(r, p, chain(draws, _blocks(d)).__next__)
                for r, p, d, draws in zip(requests, prompts, digests, _draws(digests))]


GARBAGE = ("Sure! Here is the answer you asked for.", "{\"oops\": ", "```json\nnot json\n```")


def _reply(request: ChatRequest, prompt: str, nxt) -> Completion:
    """The reply to one request, `nxt` its stream of numbers."""
    task = next((m["content"] for m in request.messages if m["role"] == "user"), prompt)
    prompt_tokens = max(1, len(prompt) // 4)
    roll = nxt()
    if request.schema is None:
        text = " ".join(_words(task)[:8])
    elif roll < 0.04:
        text = GARBAGE[int(nxt() * len(GARBAGE))]
    else:
        text = _builder(request.schema)(nxt, _words(task))
        if roll > 0.985:  # the reply hit the token limit: cut it
            return Completion(text[: len(text) // 2], prompt_tokens, request.max_tokens, "length")
    return Completion(text, prompt_tokens, max(1, len(text) // 4), "stop")


QUALITIES = (4, 6, 7, 8, 9, 9, 10, 10, 10)  # an object's overall quality; its integer fields stray by one
NUDGES = (-1, 0, 0, 0, 1)
# A function (next, words) -> the JSON text of a value that follows the schema, made once per schema: the
# per-reply work is then the draws and the text, nothing else. The text is what json.dumps(value,
# ensure_ascii=False) gives, written directly (no dict built, then walked by the encoder).
_builder = once_per_schema(lambda schema: _build(schema, ""))
_json_str = encode_basestring
_to_json = json.JSONEncoder(ensure_ascii=False).encode


def _build(schema: dict, name: str):
    kind = schema.get("type")
    if "enum" in schema:
        options = tuple(_to_json(o) for o in schema["enum"])
        return lambda nxt, words: options[int(nxt() * len(options))]
    if kind == "object":
        fields = []
        for key, sub in schema.get("properties", {}).items():
            if sub.get("type") == "integer":
                fields.append((_to_json(key) + ": ", (sub.get("minimum", 0), sub.get("maximum", 10)), None))
            else:
                fields.append((_to_json(key) + ": ", None, _build(sub, key)))

        def build_object(nxt, words):
            quality = QUALITIES[int(nxt() * 9)]
            out = []
            for key, bounds, sub in fields:
                if sub is None:
                    out.append(f"{key}{max(bounds[0], min(bounds[1], quality + NUDGES[int(nxt() * 5)]))}")
                else:
                    out.append(key + sub(nxt, words))
            return "{" + ", ".join(out) + "}"
        return build_object
    if kind == "array":
        n = schema.get("minItems", 3)
        return lambda nxt, words: "[" + ", ".join([_json_str(words[int(nxt() * len(words))]) for _ in range(n)]) + "]"
    if kind == "boolean":
        return lambda nxt, words: "true" if nxt() < 0.97 else "false"
    if kind == "integer":
        lo = schema.get("minimum", 0)
        span = schema.get("maximum", 10) - lo + 1
        return lambda nxt, words: str(int(lo + nxt() * span))
    limit = schema.get("maxLength", 200)
    return lambda nxt, words: _json_str(_text(name, nxt, words)[:limit])


def _text(name: str, nxt, words: tuple[str, ...]) -> str:
    n, top = len(words), min(4, len(words))
    a, b = words[int(nxt() * top)], words[int(nxt() * n)]
    if name == "instruction":
        if nxt() < 0.06:  # an exact duplicate of other tasks: exercises near-duplicate removal
            return "Explain the main idea of this topic in simple terms."
        # an opener, two topic words, and a few more of the prompt's words so that tasks differ
        detail = " ".join([words[int(nxt() * n)] for _ in range(4)])
        return f"{OPENERS[int(nxt() * len(OPENERS))]} {a} and {b}, focusing on {detail}."
    if name == "response":
        roll = nxt()
        if roll < 0.04:
            return REFUSAL
        if roll < 0.07:
            return "Yes."
        body = " ".join([words[int(nxt() * n)] for _ in range(25)])
        return f"First, consider {a}. Then relate it to {b}: {body}. In short, {a} and {b} work together."
    return f"{name or 'text'} about {a} and {b}"
