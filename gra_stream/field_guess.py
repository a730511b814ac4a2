"""`gra-stream init`'s proposal for a file's field mapping: by name where the names are known, otherwise by
what the values look like (text or not, how long, how many end with a question mark, which comes first).
It always proposes something for a readable file, and says which parts are guesses."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from gra_stream.config import Fields
from gra_stream.errors import UserError
from gra_stream.fields import Mapping, chat_turns, resolve_mapping
from gra_stream.prompts import clip

MIN_TEXT_CHARS = 10  # shorter on average (ids, labels, difficulty levels) is not an instruction or a response


@dataclass
class FieldStats:
    name: str
    kind: str                 # text, list of text, chat, number, object, list, empty
    mean_chars: float = 0.0
    questions: float = 0.0    # share of values ending with "?"
    spaced: float = 0.0       # share of values with a space or a line break: prose, not an id or a hash
    sample: str = ""


@dataclass
class Guess:
    mapping: Mapping
    fields: list[FieldStats]
    unsure: list[str] = field(default_factory=list)


def _kind(value) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool) or value is None:
        return "empty" if value is None else "flag"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        if chat_turns(value):
            return "chat"
        return "list of text" if value and all(isinstance(v, str) for v in value) else "list"
    return type(value).__name__


def field_stats(records: list[dict]) -> list[FieldStats]:
    """What each top-level field of the records holds, in the order the first record lists them."""
    names = list(dict.fromkeys(k for r in records for k in r))
    out = []
    for name in names:
        values = [r[name] for r in records if r.get(name) is not None]
        kinds = [_kind(v) for v in values]
        kind = max(set(kinds), key=kinds.count) if kinds else "empty"
        texts = [v if isinstance(v, str) else "\n".join(v) for v, k in zip(values, kinds)
                 if k in ("text", "list of text")]
        sample = json.dumps(values[0], ensure_ascii=False, default=str) if values else ""

        def share(measure) -> float:  # its mean over the text values
            return sum(map(measure, texts)) / len(texts) if texts else 0.0

        out.append(FieldStats(name, kind, share(len), share(lambda t: t.rstrip().endswith("?")),
                              share(lambda t: any(c.isspace() for c in t.strip())), clip(" ".join(sample.split()), 80)))
    return out


def guess_mapping(records: list[dict], fields: Fields, path: Path) -> Guess:
    stats = field_stats(records)
    try:
        mapping = resolve_mapping(records[0], fields, path)
    except UserError:
        mapping = None
    if mapping is not None and (mapping.chat or mapping.response):
        return Guess(mapping, stats)
    texts = [s for s in stats if s.kind in ("text", "list of text")]
    long_texts = [s for s in texts if s.mean_chars >= MIN_TEXT_CHARS and s.spaced >= 0.5] or texts
    unsure = []
    if mapping is not None:  # an instruction by name, no response by name
        instruction = mapping.instruction
    elif long_texts:
        others = sorted(long_texts, key=lambda s: -s.mean_chars)[1:] or long_texts
        best = max(others, key=lambda s: (s.questions, -stats.index(s)))
        instruction = best.name
        unsure.append(f"instruction = {instruction!r} is a guess from the values ({best.questions:.0%} end with "
                      f"'?', {best.mean_chars:.0f} characters on average)")
    else:
        instruction = stats[0].name if stats else "instruction"
        unsure.append(f"instruction = {instruction!r}: no field holds text; map one by hand")
    taken = (instruction, mapping.input if mapping is not None else "")  # the input found by name is not a response
    rest = [s for s in long_texts if s.name not in taken]
    response = max(rest, key=lambda s: s.mean_chars).name if rest else ""
    if response:
        unsure.append(f"response = {response!r} is a guess: the longest other text field")
    else:
        unsure.append("no response field: the seeds are instruction-only (synthesis needs none; "
                      "mode = \"refinement\" writes their responses)")
    input_ = mapping.input if mapping is not None and mapping.input != response else ""
    return Guess(Mapping(instruction, input_, response), stats, unsure)


def fields_block(guess: Guess, path: Path, records: int) -> str:
    """The [fields] section of the config `init` writes, with what it saw as comments."""
    m = guess.mapping
    lines = [f"# gra-stream init read the first {records} record(s) of {path}. Their fields:"]
    lines += [f"#   {s.name!r}: {s.kind}" + (f", {s.mean_chars:.0f} chars on average" if s.mean_chars else "")
              + f"; e.g. {s.sample}" for s in guess.fields]
    lines += [f"# check: {note}" for note in guess.unsure]
    lines += ["# Each value: a field name, a dotted path (instances.0.output), or a DuckDB expression over the",
              "# record's columns (array_to_string(passages, chr(10))); chat: a list of chat turns.", "[fields]"]
    lines += [f"{key} = {json.dumps(value, ensure_ascii=False)}"
              for key, value in (("instruction", m.instruction), ("input", m.input), ("response", m.response),
                                 ("chat", m.chat))]
    return "\n".join(lines) + "\n"
