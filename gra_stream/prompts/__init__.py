"""Prompt templates, one NAME.txt per role, and their rendering: `{{slot}}` filled in one pass, per value
(`render`) or per column of a batch in Polars (`render_column`). A user's `prompts_dir` may replace any
template; its slots are checked before any model loads. Depends on nothing above it in the package."""
from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from gra_stream.errors import UserError
from gra_stream import resources

PROMPTS = resources.prompts_dir()  # the bundled templates
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


def clip_column(text: pl.Expr, limit: int) -> pl.Expr:
    """`clip` on every row of a string column."""
    return pl.when(text.str.len_chars() > limit).then(pl.concat_str(text.str.slice(0, limit), pl.lit(" [...]"))
                                                      ).otherwise(text)


MISSING_RESPONSE = "(none: this seed has no response)"


def or_missing(response: pl.Expr) -> pl.Expr:
    """An instruction-only seed's empty response, said in words where a prompt shows it."""
    return pl.when(response == "").then(pl.lit(MISSING_RESPONSE)).otherwise(response)


def render_column(template: str, values: dict[str, pl.Expr]) -> pl.Expr:
    """`render` on every row: the template's text around each {{slot}}, concatenated with the slot's
    column. In Polars, not per row in Python (a prompt is rendered for every call of a run)."""
    parts = _SLOT.split(template)  # text, slot name, text, slot name, ..., text
    missing = [name for name in parts[1::2] if name not in values]
    if missing:
        raise KeyError(f"template slot {{{{{missing[0]}}}}} has no value")
    pieces = [values[part] if k % 2 else pl.lit(part) for k, part in enumerate(parts) if k % 2 or part]
    return pl.concat_str(pieces) if pieces else pl.lit("")
