"""JSON schemas of the model replies, one per role. Free-text fields carry a maxLength so that
structured decoding ends them before max_tokens cuts the reply."""
from collections.abc import Callable

from gra_stream.schemas import CHECKS, DOMAINS, SCORE_DIMS


def once_per_schema(make: Callable[[dict], Callable]) -> Callable[[dict], Callable]:
    """`make(schema)` computed once per schema dict and kept: schemas are unhashable dicts, so they are
    keyed by identity (the prompts' schemas are a few constant dicts; a schema made per call, as tests
    do, is compiled again, and the cache is emptied at 256 entries so such schemas are not all kept)."""
    cache: dict[int, tuple[dict, Callable]] = {}

    def compiled(schema: dict) -> Callable:
        hit = cache.get(id(schema))
        if hit is None or hit[0] is not schema:
            if len(cache) >= 256:
                cache.clear()
            hit = cache[id(schema)] = (schema, make(schema))
        return hit[1]
    return compiled


def _text(max_length: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": max_length}


def _keywords() -> dict:
    return {"type": "array", "items": _text(30), "minItems": 3, "maxItems": 3}


_SCORES = {d: {"type": "integer", "minimum": 0, "maximum": 10} for d in SCORE_DIMS}

PROFILE = {"type": "object", "properties": {"domain": {"type": "string", "enum": list(DOMAINS)},
                                            "keywords": _keywords(), "summary": _text(150)},
           "required": ["domain", "keywords", "summary"], "additionalProperties": False}
GENERATE = {"type": "object", "properties": {"keywords": _keywords(), "instruction": _text(400),
                                             "response": _text(1200)},
            "required": ["keywords", "instruction", "response"], "additionalProperties": False}
REFINE = {"type": "object", "properties": {"keywords": _keywords(), "response": _text(1200)},
          "required": ["keywords", "response"], "additionalProperties": False}
REVIEW = {"type": "object",
          "properties": {**{c: {"type": "boolean"} for c in CHECKS}, **_SCORES,
                         "strengths": _text(200), "weaknesses": _text(200)},
          "required": [*CHECKS, *SCORE_DIMS, "strengths", "weaknesses"], "additionalProperties": False}
ADJUDICATE = {"type": "object", "properties": {**_SCORES, "comment": _text(200)},
              "required": [*SCORE_DIMS, "comment"], "additionalProperties": False}

# Token budgets for the schemas above: the JSON structure plus the free-text maxLengths at two
# characters a token (small models degenerate into one-character tokens: "1.1.1.1...").
MAX_TOKENS = {"profile": 240, "generate": 1000, "review": 400, "adjudicate": 260}
