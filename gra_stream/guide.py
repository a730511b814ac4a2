"""A guided start: `gra-stream init` writes a commented config for a seed file after looking at its
fields, and `gra-stream run --dry-run` checks everything a run needs and shows the first prompts,
without loading a model."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from gra_stream.config import DEFAULT_CONFIG, Config
from gra_stream.errors import UserError
from gra_stream.fields import extract, resolve_mapping
from gra_stream.llm import clip, load_prompt
from gra_stream.readers import iter_rows
from gra_stream.sql_filters import load_filters
from gra_stream.stages.profile import profile_prompts


def first_record(path: Path) -> dict:
    for row in iter_rows(path):
        if row.record is not None:
            return row.record
    raise UserError(f"{path}: no readable record in the file")


def init_config(seeds: Path, out: Path, config: Config) -> str:
    """Write DEFAULT_CONFIG with the [fields] of `seeds` filled in; returns the mapping it found."""
    if out.exists():
        raise UserError(f"{out} exists; choose another name or remove it")
    record = first_record(seeds)
    mapping = resolve_mapping(record, config.fields, seeds)
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    fields = (f"# {seeds} has the fields: {', '.join(sorted(record))}\n"
              f"# first record: {clip(json.dumps(record, ensure_ascii=False), 300)}\n"
              f"[fields]\ninstruction = \"{mapping.instruction}\"\ninput = \"{mapping.input}\"\n"
              f"response = \"{mapping.response}\"\n")
    start = text.index("[fields]")
    end = text.index("\n\n", start)
    text = text[:start] + fields + text[end + 1:]
    out.write_text(text, encoding="utf-8")
    return mapping.describe()


def dry_run(seeds: list[Path], config: Config, *, prompts: int = 2) -> str:
    """Check config, field mapping and SQL filters, and render the first profile prompts."""
    lines = [f"config {config.source}: ok ({len(config.models)} model(s): "
             f"{', '.join(f'{m.name} [{m.backend}]' for m in config.models)})"]
    filters = load_filters(config)
    lines.append(f"SQL filters: {', '.join(f.name for f in filters) or 'none'}: ok (dry-run on an empty batch)")
    system, template = load_prompt("system", config.prompts_dir), load_prompt("profile", config.prompts_dir)
    shown = 0
    for path in seeds:
        if not path.is_file():
            raise UserError(f"seed file {path} does not exist")
        record = first_record(path)
        mapping = resolve_mapping(record, config.fields, path)
        lines.append(f"{path}: {mapping.describe()}")
        for row in iter_rows(path):
            if shown >= prompts:
                break
            texts, reason = extract(row.record, mapping) if row.record else (None, row.error)
            if texts is None:
                lines.append(f"  line {row.line}: would be skipped: {reason}")
                continue
            [user] = profile_prompts(pl.DataFrame({"instruction": [texts[0]], "input": [texts[1] or ""],
                                                   "response": [texts[2]]}), template)
            lines += [f"--- profile prompt for {path.name} line {row.line} ---", f"[system] {system.strip()}",
                      f"[user] {user.strip()}"]
            shown += 1
    lines.append("dry run: nothing was written and no model was loaded")
    return "\n".join(lines)
