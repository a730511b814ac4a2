"""What each stage's results depend on, in one place: the config keys it reads, the prompt templates it
renders, the SQL filters it applies, the model specs whose replies it uses, and the stages it reads from.

A stage's version hashes those (with the versions of the stages it reads from), so it changes when, and
only when, its results can change. Performance knobs (batch sizes, executor and worker settings, in-flight
limits, timeouts and retries, rate budgets, prices, engine settings that do not change replies) are in no
stage's list. With more than one round, generation reads the samples of earlier rounds, so every stage
depends on every other. Raising `rounds` only adds work: the earlier rounds' tables stay valid.

The runner records the versions with each run and refuses to mix versions in one run directory
(`check_versions`): tables made under one config are never silently taken for the results of another.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from gra_stream.config import Config
from gra_stream.errors import UserError
from gra_stream.ids import content_id
from gra_stream.prompts import load_prompt
from gra_stream.sql_filters import load_filters

# The fields of a model spec that change its replies (and so every LLM stage that calls it).
REPLY_FIELDS = ("name", "backend", "path", "url", "api_model", "temperature", "top_p", "repetition_penalty",
                "max_tokens", "trust_remote_code")
# Engine settings that change replies: numerics and what fits in a prompt.
ENGINE_KEYS = ("vllm.dtype", "vllm.max_model_len")


@dataclass(frozen=True)
class Depends:
    keys: tuple[str, ...] = ()        # config keys, dotted ("committee.tau"); a section name means all of it
    prompts: tuple[str, ...] = ()
    models: bool = False              # an LLM stage: the pool's reply-changing specs, in order (roles are dealt from it)
    filters: bool = False
    reads: tuple[str, ...] = ()       # stages whose output it reads


LLM = ("run_seed", "max_reasks", *ENGINE_KEYS)
STAGES: dict[str, Depends] = {
    "ingest": Depends(keys=("fields",)),
    "profile": Depends(keys=LLM, prompts=("system", "profile"), models=True, reads=("ingest",)),
    "embed": Depends(keys=("diversity.enabled", "diversity.model"), reads=("ingest",)),
    "generate": Depends(keys=(*LLM, "mode", "rounds", "tasks_per_seed", "tasks_per_round", "committee.reviewers"),
                        prompts=("system", "generate", "refine"), models=True, reads=("profile",)),
    "gate": Depends(keys=("dedup.num_perm", "dedup.bands", "dedup.threshold", "dedup.shingle_chars",
                          "decontamination"), filters=True, reads=("generate",)),
    "review": Depends(keys=(*LLM, "committee.tau", "committee.short_circuit"), prompts=("system", "review"),
                      models=True, reads=("gate",)),
    "decide": Depends(keys=("committee.tau", "committee.delta", "committee.min_reviews", "committee.reviewers"),
                      reads=("review",)),
    "adjudicate": Depends(keys=(*LLM, "committee.tau"), prompts=("system", "adjudicate"), models=True,
                          reads=("decide",)),
    "diversity": Depends(keys=("diversity.enabled", "diversity.model", "diversity.threshold",
                               "diversity.compare_seeds", "diversity.index", "diversity.cells", "diversity.probes"),
                         reads=("adjudicate", "embed")),
    "annotate": Depends(keys=LLM, prompts=("system", "profile"), models=True, reads=("diversity",)),
    "finalize": Depends(reads=("annotate",)),
}


def _value(data: dict, key: str):
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def inputs(config: Config) -> dict[str, dict]:
    """Per stage, everything its results depend on besides its input rows, as plain data."""
    data = config.to_json()
    prompts = {name: load_prompt(name, config.prompts_dir) for name in ("system", "profile", "generate", "refine",
                                                                         "review", "adjudicate")}
    filters = [(f.name, f.sql, f.params) for f in load_filters(config)]
    models = [{k: getattr(m, k) for k in REPLY_FIELDS} for m in config.models]
    out = {}
    for stage, dep in STAGES.items():
        own = {key: _value(data, key) for key in dep.keys}
        own.update({f"prompt {name}": content_id(prompts[name]) for name in dep.prompts})
        if dep.filters:
            own["filters"] = json.loads(json.dumps(filters, default=str))
        if dep.models:
            own["models"] = models
        out[stage] = own
    if config.rounds > 1:  # generation reads earlier rounds' samples: each stage depends on all of them
        union = {key: value for own in out.values() for key, value in own.items()}
        out = {stage: union for stage in out}
    return out


def versions(config: Config) -> dict[str, str]:
    """Per stage, a hash of its inputs and of the versions of the stages it reads from."""
    own = inputs(config)
    done: dict[str, str] = {}
    for stage, dep in STAGES.items():  # in pipeline order: what a stage reads is done before it
        done[stage] = content_id(json.dumps(own[stage], sort_keys=True, default=str),
                                 *(done[r] for r in dep.reads))
    return done


def changes(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    """What differs between two stages' inputs, as "key old -> new" (only "key" for templates, filters, models)."""
    a = {k: v for own in old.values() for k, v in own.items()}
    b = {k: v for own in new.values() for k, v in own.items()}
    out = []
    for key in sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)):
        plain = all(isinstance(v, (str, int, float, bool, type(None))) for v in (a.get(key), b.get(key)))
        out.append(f"{key} {a.get(key)!r} -> {b.get(key)!r}" if plain and not key.startswith("prompt ") else key)
    return out


def check_versions(recorded: dict | None, config: Config, tables_with_rows: set[str]) -> None:
    """Stop, in one line, when tables with rows were made under a config whose results differ from this one's.

    `recorded` is what the latest run recorded: {"versions": {stage: hash}, "inputs": {stage: {...}}}."""
    if not recorded:
        return
    now = versions(config)
    stale = [s for s in STAGES if s in tables_with_rows and recorded["versions"].get(s) not in (None, now[s])]
    if not stale or _only_more_rounds(recorded, config, stale):
        return
    keys = changes(recorded.get("inputs", {}), inputs(config))
    raise UserError(
        f"this run directory's tables were made under another config: {'; '.join(keys) or 'the stages'} changed, "
        f"which changes the results of {', '.join(stale)}. gra-stream does not yet recompute just what a change "
        f"affects: run it into a new --run-dir, or go back to the config the tables were made with to resume")


def _only_more_rounds(recorded: dict, config: Config, stale: list[str]) -> bool:
    """More rounds than the tables were made with, and nothing else changed: the earlier rounds' results are
    what a run with more rounds computes too, so the new rounds just add to them."""
    rounds = recorded.get("inputs", {}).get("generate", {}).get("rounds")
    if not isinstance(rounds, int) or config.rounds <= rounds:
        return False
    before = versions(dataclasses.replace(config, rounds=rounds))
    return all(recorded["versions"].get(s) == before[s] for s in stale)


def record(config: Config) -> dict:
    """What a run records of its config's versions (kept in the `runs` table)."""
    return {"versions": versions(config), "inputs": json.loads(json.dumps(inputs(config), default=str))}
