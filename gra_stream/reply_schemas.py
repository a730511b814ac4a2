"""JSON schemas of the model replies, one per role. Free-text fields carry a maxLength so that
structured decoding ends them before max_tokens cuts the reply."""
from gra_stream.schemas import CHECKS, DOMAINS, SCORE_DIMS


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
