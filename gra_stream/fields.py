"""Field mapping: which parts of a seed record hold the instruction, its input and the response.

Each of `[fields] instruction`, `input` and `response` is one of:
- a field name, in any capitalisation (`Instruction`, `QUESTION`), or a dotted path (`instances.0.output`);
- a DuckDB SQL expression over the record's columns (`array_to_string(passages, chr(10))`), for anything a
  name cannot say: any value that is not a plain name or dotted path (it has parentheses, quotes or
  operators). It runs once per batch of records, which are registered as a table: seed text is data,
  never part of the SQL (gra_stream/field_expressions.py).
`[fields] chat` names a list of chat turns instead (ShareGPT `conversations` of {from, value}, OpenAI
`messages` of {role, content}): the first user turn is the instruction, the assistant turn right after it
the response; system turns and later turns are not used. A list of strings (passages, contexts) becomes
its items joined by newlines. The response may be absent: instruction-only seeds are profiled from the
instruction alone, and refinement writes their response.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from gra_stream.config import Fields
from gra_stream.errors import UserError, sql_message
from gra_stream.readers import get_path

MAX_FIELD_CHARS = 100_000

# Recognised names, most specific first, compared in lower case. en_* wins over the unprefixed field
# (Alpaca en/zh keeps Chinese in the unprefixed one).
INSTRUCTION_NAMES = ("en_instruction", "instruction", "question", "prompt", "query", "problem", "request",
                     "user_prompt", "task", "text", "user", "human")
INPUT_NAMES = ("en_input", "input", "context", "contexts", "passages", "passage", "document")
RESPONSE_NAMES = ("en_output", "output", "response", "answer", "long_answer", "completion", "canonical_solution",
                  "solution", "code", "target", "reply", "chosen", "final_answer", "assistant")
CHAT_NAMES = ("conversations", "messages", "conversation", "dialog", "turns", "chosen")  # chosen: preference sets
USER_ROLES = ("user", "human")
ASSISTANT_ROLES = ("assistant", "gpt", "bot", "model", "chatgpt")

_PATH = re.compile(r"[\w\- ]+(\.[\w\- ]+)*")


def is_expression(value: str) -> bool:
    """A mapping value is an expression unless it is a plain name or dotted path."""
    return bool(value) and _PATH.fullmatch(value) is None


@dataclass(frozen=True)
class Mapping:
    instruction: str
    input: str
    response: str
    chat: str = ""

    def describe(self) -> str:
        if self.chat:
            return f"chat={self.chat} (first user turn, then the assistant's reply)"
        return f"instruction={self.instruction} input={self.input or '-'} response={self.response or '-'}"

    def under(self, key: str) -> Mapping:
        """This mapping of an object that is field `key` of the record: each name a dotted path through it."""
        def through(name: str) -> str:
            return f"{key}.{name}" if name else ""
        return Mapping(through(self.instruction), through(self.input), through(self.response), through(self.chat))

    def expressions(self) -> dict[str, str]:
        return {role: value for role, value in (("instruction", self.instruction), ("input", self.input),
                                                ("response", self.response)) if is_expression(value)}


def field_names(record: dict) -> dict[str, str]:
    """Lower-cased name -> the record's own spelling (the first, where two differ only in case)."""
    names: dict[str, str] = {}
    for key in record:
        names.setdefault(str(key).lower(), key)
    return names


def chat_turns(value) -> list[tuple[str, object]] | None:
    """(role, text) of each turn when `value` is a list of chat turns (ShareGPT or OpenAI style), else None."""
    if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
        return None
    turns = []
    for turn in value:
        lower = field_names(turn)
        role = turn.get(lower.get("from", lower.get("role", "")))
        text = turn.get(lower.get("value", lower.get("content", "")))
        if not isinstance(role, str):
            return None
        turns.append((role.lower(), _parts_text(text)))
    return turns


def _parts_text(content):
    """A turn's content as text where it is OpenAI's list of text parts (`[{"type": "text", "text": ...}]`),
    joined by newlines; other content as it is (a turn with an image part is then no text: the row is
    unusable, as its instruction would not make sense without the image)."""
    if isinstance(content, list) and content and all(
            isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in content):
        return "\n".join(part["text"] for part in content)
    return content


def resolve_mapping(record: dict, fields: Fields, path: Path, *, descend: bool = True) -> Mapping:
    """Pick the mapping of one file from its first record; explicit config fields always win. With no
    field configured and none found by name, the names are looked for in each object field of the record
    (`descend`: one level down)."""
    names = field_names(record)

    def first(candidates, exclude=()):
        return next((names[n] for n in candidates if n in names and names[n] not in exclude), "")

    def own(value):  # a configured name in another capitalisation is the record's own spelling
        return names.get(value.lower(), value) if value and not is_expression(value) and "." not in value else value

    chat = fields.chat or ("" if fields.instruction else
                           next((names[n] for n in CHAT_NAMES if n in names and chat_turns(record[names[n]])), ""))
    if chat:
        return Mapping("", "", "", chat=own(chat))
    instruction = own(fields.instruction) or first(INSTRUCTION_NAMES) or first(("input",))
    nested = isinstance(record.get("instances"), list) and record["instances"] \
        and isinstance(record["instances"][0], dict)
    response = own(fields.response) or first(RESPONSE_NAMES, exclude=(instruction,))
    input_ = own(fields.input) or first(INPUT_NAMES, exclude=(instruction, response))
    if nested and not fields.response and not response:
        response = "instances.0.output"
        input_ = input_ or "instances.0.input"
    if not instruction and descend and fields == Fields():  # the fields may sit in an object: {"data": {...}}
        for key, value in record.items():
            if isinstance(value, dict) and _PATH.fullmatch(str(key)) and "." not in str(key):
                try:
                    return resolve_mapping(value, fields, path, descend=False).under(str(key))
                except UserError:
                    continue
    if not instruction:
        lists = [k for k, v in record.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        hint = f"; {lists[0]!r} holds a list of {len(record[lists[0]])} objects: save it as JSON Lines" if lists else ""
        raise UserError(f"{path}: cannot find the instruction field among: {', '.join(sorted(map(str, record))) or '(none)'}"
                        f"{hint}; `gra-stream init {path}` proposes a mapping, or set [fields] instruction in the config")
    return Mapping(instruction, input_, response)


def _text(role: str, name: str, value) -> tuple[str | None, str]:
    """One mapped value as text, or None and why the record is unusable. A float NaN (what pandas writes
    for an empty cell) is a missing value, not the text "nan"."""
    if isinstance(value, float) and math.isnan(value):
        value = None
    if value is None:
        return ("", "") if role != "instruction" else (None, f"missing {role} field {name!r}")
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        value = "\n".join(str(v) for v in value)
    if isinstance(value, (bool, dict, list)):
        return None, f"{role} field {name!r} is {type(value).__name__}, expected text"
    text = str(value).strip()
    if "\x00" in text:
        return None, f"{role} field {name!r} contains a NUL character"
    if not text.isascii() and not _encodable(text):
        return None, f"{role} field {name!r} contains an unpaired surrogate (a broken \\u escape), which is not text"
    if len(text) > MAX_FIELD_CHARS:
        return None, f"{role} field {name!r} has {len(text)} characters (limit {MAX_FIELD_CHARS})"
    if not text and role == "instruction":
        return None, f"empty {role} field {name!r}"
    return text, ""


def _encodable(text: str) -> bool:
    """Whether the text is valid Unicode: Python's JSON reader turns an escaped half of a surrogate pair
    ("\\ud800" alone) into a string that no UTF-8 file can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _from_chat(record: dict, name: str) -> tuple[object, object, str]:
    """(instruction, response, reason) of a chat record: the first user turn and the assistant's reply."""
    turns = chat_turns(get_path(record, name))
    if turns is None:
        return None, None, f"chat field {name!r} is not a list of turns with a role"
    for k, (role, text) in enumerate(turns):
        if role in USER_ROLES:
            reply = turns[k + 1] if k + 1 < len(turns) and turns[k + 1][0] in ASSISTANT_ROLES else (None, None)
            return text, reply[1], ""
    return None, None, f"chat field {name!r} has no user turn"


def extract_many(records: list[dict], mapping: Mapping) -> list[tuple[tuple[str, str, str] | None, str]]:
    """The (instruction, input, response) texts of each record, or None and the reason it is unusable."""
    from gra_stream.field_expressions import evaluate

    if mapping.chat:
        values = {"instruction": [], "input": [None] * len(records), "response": []}
        failed = {}
        for i, record in enumerate(records):
            instruction, response, reason = _from_chat(record, mapping.chat)
            values["instruction"].append(instruction)
            values["response"].append(response)
            if reason:
                failed[i] = reason
        names = {"instruction": mapping.chat, "input": "", "response": mapping.chat}
    else:
        names = {"instruction": mapping.instruction, "input": mapping.input, "response": mapping.response}
        failed = {}
        values = {}
        for role, name in names.items():
            if not name:
                values[role] = [None] * len(records)
            elif is_expression(name):
                values[role] = []
                for i, value in enumerate(evaluate(name, records)):
                    if isinstance(value, Exception):
                        failed.setdefault(i, f"{role} expression failed: {sql_message(value)}")
                        value = None
                    values[role].append(value)
            else:
                values[role] = [get_path(r, name) for r in records]
    out = []
    for i in range(len(records)):
        if i in failed:
            out.append((None, failed[i]))
            continue
        texts = []
        for role in ("instruction", "input", "response"):
            text, reason = _text(role, names[role], values[role][i])
            if text is None:
                break
            texts.append(text)
        out.append((tuple(texts), "") if len(texts) == 3 else (None, reason))
    return out


def extract(record: dict, mapping: Mapping) -> tuple[tuple[str, str, str] | None, str]:
    """`extract_many` for one record."""
    return extract_many([record], mapping)[0]
