"""What a run is about to do, said before it does it: after a config change, stage by stage, which tables
are kept aside or come back, how many rows each had and whether its LLM requests change; for a new run
directory (`run --dry-run`), the most LLM calls, output and prompt tokens the whole run can take."""
from __future__ import annotations

import dataclasses
from itertools import islice
from pathlib import Path

import polars as pl

from gra_stream import carry, kept_versions, run_log, stage_versions
from gra_stream.config import Config, Fields
from gra_stream.fields import extract_many
from gra_stream.ingest import EXTRACT_ROWS, first_record, resolve_file_mapping, same_mappings
from gra_stream.kept_versions import Move
from gra_stream.prompts import load_prompt
from gra_stream.readers import iter_rows
from gra_stream.reply_schemas import MAX_TOKENS
from gra_stream.stages.profile import profile_prompts
from gra_stream.store import Store

CHARS_PER_TOKEN = 4  # as the rate limiter counts a prompt (docs/backends.md)


def with_recorded_fields(store: Store, recorded_config: dict, config: Config, seed_files: list[Path]) -> Config:
    """`config` with the [fields] section the tables were made under, where the two map every seed file
    (ingested before, or read by this run) the same way: a section spelled differently, such as the
    explicit mapping `gra-stream init` writes for names the default recognises, changes no result."""
    recorded = recorded_config.get("fields")
    if recorded is None or recorded == config.to_json()["fields"]:
        return config
    ingested = store.scan("files").select("path").collect()["path"].to_list()
    old = Fields(**recorded)
    paths = list(dict.fromkeys([*map(Path, ingested), *seed_files]))
    return dataclasses.replace(config, fields=old) if same_mappings(paths, old, config.fields) else config


def planned_moves(store: Store, recorded: dict | None, config: Config, stages) -> list[Move]:
    """The table moves that bring a run directory made under `recorded` to `config` (none if unchanged)."""
    stale = stage_versions.changed_stages(recorded, config)
    if not stale:
        return []
    return kept_versions.plan_moves(store, stale, kept_versions.stage_tables(stages), stage_versions.versions(config))


def preview(store: Store, seed_files: list[Path], config: Config, stages) -> str:
    """What `run` would do first (for --dry-run): the change plan on a run directory made under another
    config, or the estimate of the whole run on a new one."""
    pending = kept_versions.pending_switch(store)
    recorded, recorded_config = pending or run_log.tables_config(store)
    if recorded is None:
        return whole_run_estimate(seed_files, config)
    config = with_recorded_fields(store, recorded_config, config, seed_files)
    moves = planned_moves(store, recorded, config, stages)
    if not moves and pending:
        return (f"{store.root}: a run stopped while it switched these tables to this config (its plan said what "
                f"the change recomputes); a run finishes the switch, then recomputes that")
    if not moves:
        return (more_rounds(store, recorded_config, config)
                or f"{store.root}: made under this config; a run does only what is pending (new seeds, unfinished work)")
    return change_plan(recorded, config, moves, store.root)


def more_rounds(store: Store, recorded_config: dict, config: Config) -> str | None:
    """What raising `rounds` adds (None if it was not raised): the earlier rounds' tables stand, and the
    first new round anchors tasks on the profiled seeds and the samples kept so far."""
    before = recorded_config.get("rounds")
    if not isinstance(before, int) or config.rounds <= before:
        return None
    seeds = store.scan("profiles").filter(pl.col("status") == "ok").select(pl.len()).collect().item()
    samples = (store.scan("samples").filter((pl.col("kind") == "synthesis") & (pl.col("round") <= before))
               .select(pl.len()).collect().item())
    calls = _task_calls(_synthesis_tasks(seeds + samples, config), config)  # the seeds are profiled already
    lines = [f"rounds {before} -> {config.rounds}: the tables of {_rounds(1, before)} stand; round {before + 1} "
             f"anchors tasks on {seeds:,} profiled seeds and {samples:,} samples kept so far, at most (before "
             f"re-asks): {_calls_line(calls, config)}"]
    if config.rounds > before + 1:
        lines.append(f"  in {_rounds(before + 2, config.rounds)}, tasks are anchored on the samples of the rounds before too")
    if run_log.last_outcome(store) != "finished":
        lines.append("  (the last run did not finish: the work it left comes on top of these counts)")
    return "\n".join(lines)


def change_plan(recorded: dict, config: Config, moves: list[Move], run_dir: Path) -> str:
    """The lines a run prints before it switches to a changed config."""
    store = Store(run_dir)
    label = kept_versions.label_for(store, recorded["versions"])
    old = recorded.get("inputs", {})
    if not old:  # no run recorded them (run_log.tables_config)
        return "\n".join(["no run recorded the config these tables were made under (a `runs` segment was deleted?): "
                          "every stage is recomputed under this one, its LLM requests answered before replayed from "
                          "the call cache"] + [f"  {m.table:<15}{m.rows:>9,} rows kept as {label}" for m in moves if m.rows]
                         + _kept_aside(moves, label, run_dir))
    new = stage_versions.inputs(config)
    keys = {k for stage in new for k in stage_versions.differing(old.get(stage, {}), new[stage])}
    what = "gra-stream" if all(k.endswith(" revision") for k in keys) else "the config"
    lines = [f"{what} changed since these tables were made: {'; '.join(stage_versions.changes(old, new))}"]
    asks = stage_versions.asks_anew(recorded, config)
    stale = list(dict.fromkeys(m.stage for m in moves))
    carried = carry.planned(recorded, config, moves)
    for stage in stale:
        mine = [m for m in moves if m.stage == stage]
        rows = sum(m.rows for m in mine)
        keys = stage_versions.differing(old.get(stage, {}), new[stage])  # its own inputs that changed
        upstream = [s for s in stage_versions.STAGES[stage].reads if s in stale]  # recomputed stages it reads
        if mine[0].restored_from:
            what = f"{sum(m.restored_rows for m in mine):,} rows come back from {mine[0].restored_from}, no work"
        elif stage in carried:
            again, most = carry.reviews_to_ask(store, config.committee)
            what = "the reviews it asked are carried over; " + (
                f"{again:,} generations are reviewed again, up to {most:,} LLM calls" if again else "no LLM call")
        elif stage not in asks:
            what = "recomputed, no LLM call"
            if rows and carry.reads_back(config, old, new, stage):
                what += f"; the embeddings it made before are read back from {label}"
        elif asks[stage]:
            what = f"recomputed: its requests change, {_calls_expected(rows, keys, upstream)}"
        elif rows and stage_versions.STAGES[stage].carry_key and stage_versions.same_rows(old, new, stage):
            what = f"recomputed: the rows it made before are carried over from {label}, the new ones asked"
        else:
            what = "recomputed: a request answered before is replayed from the call cache, a new one is asked"
        lines.append(f"  {stage:<11}{rows:>9,} rows {'kept as ' + label if rows else '(none yet)'}; {what}  [{_cause(keys, upstream)}]")
    if run_log.last_outcome(store) != "finished":
        lines.append("  (the last run did not finish: the work it left comes on top of these counts)")
    recomputed_llm = any(m.stage in asks and not m.restored_from for m in moves)
    if recomputed_llm and any(m.backend == "fake" for m in config.models):
        lines.append("  (fake models are never cached: what is not carried over is asked again, at no cost)")
    return "\n".join(lines + _kept_aside(moves, label, run_dir))


def _kept_aside(moves: list[Move], label: str, run_dir: Path) -> list[str]:
    kept = [m.table for m in moves if m.rows]  # an empty table is not kept: the example names one that is
    if not kept:
        return []
    example = "samples" if "samples" in kept else kept[-1]
    return [f"the tables kept aside stay queryable as {label}.<table> until removed: gra-stream sql {run_dir} "
            f"\"SELECT count(*) FROM {label}.{example}\"; gra-stream status lists kept versions, gra-stream prune removes them"]


def _calls_expected(rows: int, keys: list[str], upstream: list[str]) -> str:
    """A stage whose requests change asks again for each row it makes. Where only what it asks changed (its
    prompts, models or sampling) and the rows it reads stay as they were, it makes the rows it had: at most
    that many calls. Otherwise (more tasks per seed, a recomputed input) about as many. Re-asks of replies
    that do not parse come on top."""
    asks_only = all(k.startswith("prompt ") or k == "models" or k in stage_versions.LLM for k in keys)
    if asks_only and not upstream:
        return f"up to {rows:,} LLM calls (and any re-asks)"
    return f"about {rows:,} LLM calls, as many as its rows before (and any re-asks)"


def _cause(keys: list[str], upstream: list[str]) -> str:
    if keys:
        return ", ".join(keys)
    return f"reads {', '.join(upstream)}" if upstream else "reads a changed stage"


def whole_run_estimate(seed_files: list[Path], config: Config) -> str:
    """The most LLM calls and output tokens of a run over `seed_files` (every row a new seed, every task
    passing the gate, every review asked, every sample disputed and kept): an upper bound for round 1.
    And the prompt tokens those calls send, for the bill of a hosted model: an upper bound too, but for
    the characters a token, which depend on the model's tokenizer."""
    rows, profile_chars = _seed_rows(seed_files, config)
    refinements = rows if config.mode in ("refinement", "integrated") else 0
    calls = {"profile": rows, **_task_calls(_synthesis_tasks(rows, config) + refinements, config)}
    tokens = _tokens(calls, config)
    prompt_tokens = _prompt_tokens(calls, config, profile_chars, refinements)
    lines = [f"estimate for {rows:,} seed rows, round 1, at most (before re-asks): {_calls_line(calls, config)}",
             f"  and at most about {prompt_tokens:,} prompt tokens (the replies a prompt quotes at their budgets; "
             f"about {CHARS_PER_TOKEN} characters a token, more in scripts other than Latin)"]
    if any(m.price_output or m.price_input for m in config.models):
        output_price = max(m.price_output for m in config.models)
        prompt_price = max(m.price_input for m in config.models)
        lines.append(f"  at the dearest model's prices: at most {tokens * output_price / 1e6:,.2f} for output "
                     f"tokens and at most about {prompt_tokens * prompt_price / 1e6:,.2f} for prompt tokens")
    if config.rounds > 1:
        lines.append(f"  in {_rounds(2, config.rounds)}, tasks are anchored on the samples of the rounds before too")
    return "\n".join(lines)


def _seed_rows(seed_files: list[Path], config: Config) -> tuple[int, int]:
    """How many rows of `seed_files` map to a seed, and the characters of their profile prompts."""
    template = load_prompt("profile", config.prompts_dir)
    rows = chars = 0
    for path in seed_files:
        record = first_record(path)
        if record is None:
            continue
        mapping = resolve_file_mapping(record, config, path)
        records = (row.record for row in iter_rows(path) if row.record is not None)
        while chunk := list(islice(records, EXTRACT_ROWS)):
            texts = [t for t, _ in extract_many(chunk, mapping) if t is not None]
            if texts:
                seeds = pl.DataFrame(texts, schema=["instruction", "input", "response"], orient="row")
                rows += seeds.height
                chars += sum(map(len, profile_prompts(seeds, template)))
    return rows, chars


def _prompt_tokens(calls: dict[str, int], config: Config, profile_chars: int, refinements: int) -> int:
    """The prompt tokens `calls` send at most: every call's system prompt and template; the seeds' text
    in their profile prompts, and again in the refinements; and at their token budgets, the replies a
    later prompt quotes (two profiles in a synthesis task, the generation in its reviews, adjudication and
    annotation, the reviews in the adjudication)."""
    size = {name: len(load_prompt(name, config.prompts_dir))
            for name in ("system", "profile", "generate", "review", "adjudicate")}
    template = {"generate": "generate", "review": "review", "adjudicate": "adjudicate",
                "annotate": "profile"}  # annotation asks the profile's questions of a sample
    chars = sum(calls.values()) * size["system"] + profile_chars * (2 if refinements else 1)
    chars += sum(n * size[template[role]] for role, n in calls.items() if role != "profile")  # profile_chars has its own
    quoted = {"generate": 2 * MAX_TOKENS["profile"], "review": MAX_TOKENS["generate"],
              "adjudicate": MAX_TOKENS["generate"] + config.committee.reviewers * MAX_TOKENS["review"],
              "annotate": MAX_TOKENS["generate"]}
    return chars // CHARS_PER_TOKEN + sum(n * quoted.get(role, 0) for role, n in calls.items())


def _synthesis_tasks(anchors: int, config: Config) -> int:
    """The synthesis tasks of one round anchored on `anchors` pool rows."""
    if config.mode not in ("synthesis", "integrated"):
        return 0
    tasks = anchors * config.tasks_per_seed
    return min(tasks, config.tasks_per_round) if config.tasks_per_round else tasks


def _task_calls(tasks: int, config: Config) -> dict[str, int]:
    """The most LLM calls per role for `tasks` tasks: every task passing the gate, every review asked, every
    sample disputed and kept."""
    return {"generate": tasks, "review": tasks * config.committee.reviewers, "adjudicate": tasks, "annotate": tasks}


def _tokens(calls: dict[str, int], config: Config) -> int:
    budget = {**MAX_TOKENS, "annotate": MAX_TOKENS["profile"]}  # annotation asks the profile's questions
    reasoning = max(m.reasoning_tokens for m in config.models)  # added to every budget of a reasoning model
    return sum(calls[r] * (budget[r] + reasoning) for r in calls)


def _calls_line(calls: dict[str, int], config: Config) -> str:
    return (", ".join(f"{r} {n:,}" for r, n in calls.items())
            + f" calls; {sum(calls.values()):,} calls and {_tokens(calls, config):,} output tokens in all")


def _rounds(first: int, last: int) -> str:
    return f"round {first}" if first == last else f"rounds {first} to {last}"
