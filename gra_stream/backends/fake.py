"""A deterministic fake model: every reply is derived from a hash of (model, prompt, seed).

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

from gra_stream.backends import ChatRequest, Completion

REFUSAL = "I'm sorry, but I cannot help with that request."
# Instructions open with one of these and go on with the prompt's own words: like a real model's tasks,
# two instructions share little text unless they come from similar prompts. (Fixed sentence templates
# made a quarter of all fake tasks share half their characters: thousands of times the near-duplicate
# candidates real data has, which measured the templates instead of the pipeline.)
OPENERS = ("Explain", "Describe", "Compare", "Summarize", "List the steps to", "Write a short guide on",
           "Give an example of", "Outline", "Suggest ways to improve", "Classify", "Evaluate", "Define",
           "Write a poem about", "Plan", "Rewrite in plain words:", "Answer a question about")


class _Dice:
    """A stream of deterministic numbers in [0, 1) from one hash: each SHA-256 digest gives eight."""

    def __init__(self, *parts: object):
        self.state = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass")).digest()
        self.values = struct.unpack(">8I", self.state)
        self.i = 0

    def __call__(self) -> float:
        if self.i == 8:
            self.state = hashlib.sha256(self.state).digest()
            self.values, self.i = struct.unpack(">8I", self.state), 0
        self.i += 1
        return self.values[self.i - 1] / 4294967296

    def pick(self, seq):
        return seq[int(self() * len(seq))]


def _template_words() -> set[str]:
    from gra_stream.llm import PROMPTS

    return {w.lower() for p in PROMPTS.glob("*.txt") for w in re.findall(r"[A-Za-z][A-Za-z-]+", p.read_text())}


_TEMPLATE_WORDS = _template_words()


_WORD = re.compile(r"[A-Za-z][A-Za-z-]{3,}")


def _by_length(word: str) -> tuple[int, str]:
    return -len(word), word


@lru_cache(maxsize=1024)  # the reviewers of one sample are sent the same prompt
def _words(text: str) -> tuple[str, ...]:
    """The prompt's own content words (not the template's), longest first."""
    words = set(map(str.lower, _WORD.findall(text))) - _TEMPLATE_WORDS
    return tuple(sorted(words, key=_by_length)[:12]) or ("topic", "example", "detail")


class FakeBackend:
    def __init__(self, name: str, *, latency_s: float = 0.0, record: bool = False):
        self.name = name
        self.latency_s = latency_s
        self.record = record
        self.history: list[ChatRequest] = []  # every request, with record=True (tests); unbounded, so off in runs

    def close(self) -> None:
        pass

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        if self.record:
            self.history.extend(requests)
        if self.latency_s:
            time.sleep(self.latency_s)
        return [self._one(r) for r in requests]

    def _one(self, request: ChatRequest) -> Completion:
        prompt = "\n".join(m["content"] for m in request.messages)
        dice = _Dice(self.name, prompt, request.seed)
        prompt_tokens = max(1, len(prompt) // 4)
        roll = dice()
        if request.schema is None:
            text = " ".join(_words(prompt)[:8])
        elif roll < 0.04:
            text = dice.pick(["Sure! Here is the answer you asked for.", "{\"oops\": ", "```json\nnot json\n```"])
        else:
            value = self._value(request.schema, dice, _words(prompt), "", prompt)
            text = json.dumps(value, ensure_ascii=False)
            if roll > 0.985:  # the reply hit the token limit: cut it
                return Completion(text[: len(text) // 2], prompt_tokens, request.max_tokens, "length")
        return Completion(text, prompt_tokens, max(1, len(text) // 4), "stop")

    def _value(self, schema: dict, dice: _Dice, words: list[str], name: str, prompt: str):
        kind = schema.get("type")
        if "enum" in schema:
            return dice.pick(schema["enum"])
        if kind == "object":
            quality = dice.pick([4, 6, 7, 8, 9, 9, 10, 10, 10])
            out = {}
            for key, sub in schema.get("properties", {}).items():
                if sub.get("type") == "integer":
                    lo, hi = sub.get("minimum", 0), sub.get("maximum", 10)
                    out[key] = max(lo, min(hi, quality + dice.pick([-1, 0, 0, 0, 1])))
                else:
                    out[key] = self._value(sub, dice, words, key, prompt)
            return out
        if kind == "array":
            n = schema.get("minItems", 3)
            return [dice.pick(words) for _ in range(n)]
        if kind == "boolean":
            return dice() < 0.97
        if kind == "integer":
            return int(schema.get("minimum", 0) + dice() * (schema.get("maximum", 10) - schema.get("minimum", 0) + 1))
        return self._text(name, dice, words, schema.get("maxLength", 200), prompt)

    def _text(self, name: str, dice: _Dice, words: list[str], limit: int, prompt: str) -> str:
        a, b = dice.pick(words[:4]), dice.pick(words)
        if name == "instruction":
            roll = dice()
            if roll < 0.06:  # an exact duplicate of other tasks: exercises near-duplicate removal
                text = "Explain the main idea of this topic in simple terms."
            else:  # an opener, two topic words, and a few more of the prompt's words so that tasks differ
                detail = " ".join(dice.pick(words) for _ in range(4))
                text = f"{dice.pick(OPENERS)} {a} and {b}, focusing on {detail}."
        elif name == "response":
            roll = dice()
            if roll < 0.04:
                text = REFUSAL
            elif roll < 0.07:
                text = "Yes."
            else:
                body = " ".join(dice.pick(words) for _ in range(25))
                text = f"First, consider {a}. Then relate it to {b}: {body}. In short, {a} and {b} work together."
        else:
            text = f"{name or 'text'} about {a} and {b}"
        return text[:limit]
