"""Field mapping: which fields of a seed record hold the instruction, its input and the response."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gra_stream.config import Fields
from gra_stream.errors import UserError
from gra_stream.readers import get_path

MAX_FIELD_CHARS = 100_000

# Recognised names, most specific first. en_* wins over the unprefixed field (Alpaca en/zh keeps
# Chinese in the unprefixed one).
INSTRUCTION_NAMES = ("en_instruction", "instruction", "question", "prompt", "query", "problem", "text")
INPUT_NAMES = ("en_input", "input", "context")
RESPONSE_NAMES = ("en_output", "output", "response", "answer", "completion", "canonical_solution",
                  "solution", "code", "target")


@dataclass(frozen=True)
class Mapping:
    instruction: str
    input: str
    response: str

    def describe(self) -> str:
        return f"instruction={self.instruction} input={self.input or '-'} response={self.response}"


def resolve_mapping(record: dict, fields: Fields, path: Path) -> Mapping:
    """Pick field paths for one file from its first record; explicit config fields always win."""
    keys = set(record)

    def first(names, exclude=()):
        return next((n for n in names if n in keys and n not in exclude), "")

    instruction = fields.instruction or first(INSTRUCTION_NAMES) or ("input" if "input" in keys else "")
    nested = isinstance(record.get("instances"), list) and record["instances"] \
        and isinstance(record["instances"][0], dict)
    response = fields.response or first(RESPONSE_NAMES, exclude=(instruction,))
    input_ = fields.input or first(INPUT_NAMES, exclude=(instruction,))
    if nested and not fields.response and not response:
        response = "instances.0.output"
        input_ = input_ or "instances.0.input"
    if not instruction or not response:
        which = "instruction" if not instruction else "response"
        raise UserError(f"{path}: cannot find the {which} field; the file has fields: {', '.join(sorted(keys)) or '(none)'}. "
                        f"Map it in the config, e.g. [fields] {which} = \"{sorted(keys)[0] if keys else 'name'}\"")
    return Mapping(instruction, input_, response)


def extract(record: dict, mapping: Mapping) -> tuple[tuple[str, str, str] | None, str]:
    """The (instruction, input, response) texts of one record, or None and the reason it is unusable."""
    out = []
    for role, name in (("instruction", mapping.instruction), ("input", mapping.input), ("response", mapping.response)):
        if not name:
            out.append("")
            continue
        value = get_path(record, name)
        if value is None:
            if role == "input":
                out.append("")
                continue
            return None, f"missing {role} field {name!r}"
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            return None, f"{role} field {name!r} is {type(value).__name__}, expected text"
        text = str(value).strip()
        if "\x00" in text:
            return None, f"{role} field {name!r} contains a NUL character"
        if len(text) > MAX_FIELD_CHARS:
            return None, f"{role} field {name!r} has {len(text)} characters (limit {MAX_FIELD_CHARS})"
        if not text and role != "input":
            return None, f"empty {role} field {name!r}"
        out.append(text)
    return (out[0], out[1], out[2]), ""
