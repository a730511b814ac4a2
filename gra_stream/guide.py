"""A guided start: `gra-stream init` writes a commented config for a seed file after looking at its
fields, and `gra-stream run --dry-run` checks everything a run needs and shows the first prompts,
without loading a model."""
from __future__ import annotations

from itertools import islice
from pathlib import Path

import polars as pl

from gra_stream.config import DEFAULT_CONFIG, Config
from gra_stream.errors import UserError
from gra_stream.field_guess import Guess, fields_block, guess_mapping
from gra_stream.fields import extract
from gra_stream.ingest import check_seed_files, resolve_file_mapping
from gra_stream.plan import preview, whole_run_estimate
from gra_stream.prompts import load_prompt
from gra_stream.query import read_run
from gra_stream.readers import iter_rows, read_as
from gra_stream.seed_paths import left_out_splits
from gra_stream.sql_filters import load_filters
from gra_stream.stages import all_stages
from gra_stream.stages.profile import profile_prompts
from gra_stream.store import Store


def first_record(path: Path) -> dict:
    for row in iter_rows(path):
        if row.record is not None:
            return row.record
    raise UserError(f"{path}: no readable record in the file")


INIT_RECORDS = 50  # records `init` looks at


def init_config(seeds: Path, out: Path, config: Config) -> Guess:
    """Write DEFAULT_CONFIG with a [fields] mapping proposed for `seeds` (a file or a folder), the evidence
    as comments; fails only when no record can be read."""
    if out.exists():
        raise UserError(f"{out} exists; choose another name or remove it")
    path = check_seed_files([seeds])[0]
    records = [row.record for row in islice((r for r in iter_rows(path) if r.record is not None), INIT_RECORDS)]
    if not records:
        raise UserError(f"{path}: no readable record in the file")
    guess = guess_mapping(records, config.fields, path)
    encoding = read_as(path)
    if encoding:
        guess.unsure.append(f"{path.name} is not UTF-8 and is read as {encoding}: check that the letters of "
                            f"the fields' sample values are right")
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    start = text.index("# Field mapping")
    end = text.index("\n\n", text.index("[fields]"))
    out.write_text(text[:start] + fields_block(guess, path, len(records)) + text[end + 1:], encoding="utf-8")
    return guess


def _keys_line(config: Config) -> str:
    """Whether the variables holding the HTTP models' keys and headers are set ('' for a pool without any)."""
    from gra_stream.backends.openai_http import check_credentials, credential_variables

    variables = sorted({v for m in config.models if m.backend == "openai" for _, v in credential_variables(m)})
    if not variables:
        return ""
    try:
        check_credentials(config)
    except UserError as e:
        return f"keys: {e}: the run would stop before its first request"
    return f"keys: set ({', '.join(variables)})"


def dry_run(seeds: list[Path], config: Config, run_dir: Path | None = None, *, prompts: int = 2) -> str:
    """Check config, field mapping and SQL filters, render the first profile prompts, and say what a run
    into `run_dir` would do first: the plan of a config change, or the estimate of a whole new run."""
    lines = [f"config {config.source}: ok ({len(config.models)} model(s): "
             f"{', '.join(f'{m.name} [{m.backend}]' for m in config.models)})"]
    keys = _keys_line(config)
    if keys:
        lines.append(keys)
    filters = load_filters(config)
    lines.append(f"SQL filters: {', '.join(f.name for f in filters) or 'none'}: ok (dry-run on an empty batch)")
    system, template = load_prompt("system", config.prompts_dir), load_prompt("profile", config.prompts_dir)
    shown = 0
    files = check_seed_files(seeds)
    lines += left_out_splits(seeds)
    for path in files:
        record = first_record(path)
        mapping = resolve_file_mapping(record, config, path)
        encoding = read_as(path)
        lines.append(f"{path}{f' (read as {encoding}: not UTF-8)' if encoding else ''}: {mapping.describe()}")
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
    store = Store(run_dir) if run_dir is not None else None
    if store is not None and store.exists():
        lines.append(read_run(store, lambda: preview(store, files, config, all_stages())))
    else:
        lines.append(whole_run_estimate(files, config))
    lines.append("dry run: nothing was written and no model was loaded")
    return "\n".join(lines)
