"""What each stage's results depend on, in one place: the config keys it reads, the prompt templates it
renders, the SQL filters it applies, the model specs whose replies it uses, and the stages it reads from.
Files count by their content (templates, filters, decontamination references), model folders by path.

A stage's version hashes those (with the versions of the stages it reads from), so it changes when, and
only when, its results can change. Performance knobs (batch sizes, executor and worker settings, in-flight
limits, timeouts and retries, rate budgets, prices, engine settings that do not change replies) are in no
stage's list. With more than one round, generation reads the samples of earlier rounds, so it depends on
every stage after it. Raising `rounds` only adds work: the earlier rounds' tables stay valid.

Each run records the versions (`record`). On a changed config, `changed_stages` names the stages whose
tables no longer hold this config's results; the runner moves those tables aside (gra_stream/kept_versions.py)
and recomputes them, LLM calls coming from the call cache wherever the exact request was answered before.
`requests` hashes what a stage's requests are made of, without the keys that only choose rows: `asks_anew`
tells which stages' requests the change alters, for the plan a run prints before it works, and
`same_rows` whether a kept table holds the rows a stage would make again (gra_stream/carry.py).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass

from gra_stream import resources
from gra_stream.config import Config
from gra_stream.ids import content_id
from gra_stream.prompts import load_prompt
from gra_stream.sql_filters import load_filters

# The fields of a model spec that change its replies (and so every LLM stage that calls it).
REPLY_FIELDS = ("name", "backend", "path", "url", "api_model", "temperature", "top_p", "repetition_penalty",
                "max_tokens", "trust_remote_code")
# Reply-changing fields added since: a part of a version only where not at their default, so that the
# tables made before they existed keep their versions.
LATER_REPLY_FIELDS = {"structured_output": "json_schema", "reasoning_effort": "", "reasoning_tokens": 0}
# Engine settings that change replies: numerics and what fits in a prompt.
ENGINE_KEYS = ("vllm.dtype", "vllm.max_model_len")


@dataclass(frozen=True)
class Depends:
    keys: tuple[str, ...] = ()        # config keys, dotted ("committee.tau"); a section name means all of it
    prompts: tuple[str, ...] = ()
    models: bool = False              # an LLM stage: the pool's reply-changing specs, in order (roles are dealt from it)
    filters: bool = False
    reads: tuple[str, ...] = ()       # stages whose output it reads
    selects: tuple[str, ...] = ()     # keys that choose which rows it asks about, but not what it asks
    text_from: tuple[str, ...] = ()   # stages whose rows' text goes into its prompts (or that it embeds)
    carry_key: str = ""               # its table's column naming the input row, where its rows can be carried (`same_rows`)
    reuses: tuple[str, ...] = ()      # the keys its per-row work reads, where a kept table's is reusable (`same_work`)
    revision: int = 0                 # raised where gra-stream's own code changes the stage's results (REVISIONS)


LLM = ("run_seed", "max_reasks", *ENGINE_KEYS)
SHORT_CIRCUIT = ("committee.tau", "committee.min_reviews", "committee.short_circuit")
STAGES: dict[str, Depends] = {
    # a [fields] section mapping every seed file as the recorded one does is replaced by it first
    # (plan.with_recorded_fields): the section's text is a change only where the mappings differ
    "ingest": Depends(keys=("fields",)),
    "profile": Depends(keys=LLM, prompts=("system", "profile"), models=True, reads=("ingest",), text_from=("ingest",)),
    "embed": Depends(keys=("diversity.enabled", "diversity.model"), reads=("ingest",)),
    "generate": Depends(keys=(*LLM, "mode", "rounds", "tasks_per_seed", "tasks_per_round", "committee.reviewers",
                              "waves.first_seeds"),
                        prompts=("system", "generate", "refine"), models=True, reads=("profile",),
                        text_from=("ingest", "profile")),
    "gate": Depends(keys=("dedup.num_perm", "dedup.bands", "dedup.threshold", "dedup.shingle_chars",
                          "decontamination"), filters=True, reads=("generate",)),
    # the short-circuit stops asking once tau is out of reach or too few reviews can parse (min_reviews)
    "review": Depends(keys=(*LLM, *SHORT_CIRCUIT), prompts=("system", "review"), models=True, reads=("gate",),
                      selects=SHORT_CIRCUIT, text_from=("generate",), carry_key="generation_id"),
    "decide": Depends(keys=("committee.tau", "committee.delta", "committee.min_reviews", "committee.reviewers"),
                      reads=("review",), revision=1),
    "adjudicate": Depends(keys=(*LLM, "committee.tau"), prompts=("system", "adjudicate"), models=True,
                          reads=("decide",), selects=("committee.tau",), text_from=("generate", "review"),
                          carry_key="id"),
    "diversity": Depends(keys=("diversity.enabled", "diversity.model", "diversity.threshold",
                               "diversity.compare_seeds", "diversity.index", "diversity.cells", "diversity.probes",
                               "diversity.walk_batch"),
                         reads=("adjudicate", "embed"), text_from=("generate",), reuses=("diversity.model",)),
    "annotate": Depends(keys=LLM, prompts=("system", "profile"), models=True, reads=("diversity",),
                        text_from=("generate",), carry_key="id"),
    "finalize": Depends(reads=("annotate",)),
}
# What each revision changed, for the plan of a run on tables made before it (docs/resuming.md).
REVISIONS = {("decide", 1): "a sample whose reviewers the short-circuit stopped, tau being out of reach, is "
                            "low_score, not insufficient_reviews"}
# With more than one round, generation reads the samples the stages after it made in earlier rounds.
AFTER_GENERATION = list(STAGES)[list(STAGES).index("generate"):]


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
    models = [{**{k: getattr(m, k) for k in REPLY_FIELDS},
               **{k: getattr(m, k) for k, default in LATER_REPLY_FIELDS.items() if getattr(m, k) != default}}
              for m in config.models]
    out = {}
    for stage, dep in STAGES.items():
        own = {key: _value(data, key) for key in dep.keys}
        if "decontamination" in own:  # the reference files' content, not only their names
            own["decontamination"] = {**own["decontamination"],
                                      "references": reference_digests(config.decontamination.references)}
        own.update({f"prompt {name}": content_id(prompts[name]) for name in dep.prompts})
        if dep.filters:
            own["filters"] = json.loads(json.dumps(filters, default=str))
        if dep.models:
            own["models"] = models
        if dep.revision:  # only where raised: the other stages keep the versions they had before revisions
            own[f"{stage} revision"] = dep.revision
        out[stage] = own
    if config.rounds > 1:
        out["generate"] = {key: value for stage in AFTER_GENERATION for key, value in out[stage].items()}
    return out


def reference_digests(references) -> list[list[str]]:
    """Each decontamination reference as [name, hash of its file]: a reference edited in place changes the
    gate's results as a new one does."""
    out = []
    for name in references:
        path = resources.reference_path(name)
        stat = path.stat()
        out.append([name, _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)])
    return out


@functools.lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """The file's SHA-256 (16 hex digits), read once per size and modification time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def versions(config: Config) -> dict[str, str]:
    """Per stage, a hash of its inputs and of the versions of the stages it reads from."""
    own = inputs(config)
    done: dict[str, str] = {}
    for stage, dep in STAGES.items():  # in pipeline order: what a stage reads is done before it
        done[stage] = content_id(json.dumps(own[stage], sort_keys=True, default=str),
                                 *(done[r] for r in dep.reads))
    return done


def differing(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between two stages' inputs (or two configs' flattened inputs)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def describe(key: str, old, new) -> str:
    """"key old -> new" for plain values; what changed filter by filter; only "key" for templates and models."""
    if key == "filters" and isinstance(old, list) and isinstance(new, list):
        return _filter_changes(old, new)
    if key == "decontamination" and isinstance(old, dict) and isinstance(new, dict):
        return _decontamination_changes(old, new)
    if key.endswith(" revision") and (key.removesuffix(" revision"), new) in REVISIONS:
        return f"{key} {old or 0} -> {new} ({REVISIONS[key.removesuffix(' revision'), new]})"
    plain = all(isinstance(v, (str, int, float, bool, type(None))) for v in (old, new))
    return f"{key} {old!r} -> {new!r}" if plain and not key.startswith("prompt ") else key


def _filter_changes(old: list, new: list) -> str:
    """The filters' differences (each a [name, sql, params] in the order applied), with their parameters'
    values as the filters use them, defaults included: "filters.min_length.min_response_chars 40 -> 300"."""
    a, b = {f[0]: f for f in old}, {f[0]: f for f in new}
    out = [f"filters.{name} added" for name in b if name not in a]
    out += [f"filters.{name} removed" for name in a if name not in b]
    for name in (n for n in b if n in a):
        (_, sql_a, params_a), (_, sql_b, params_b) = a[name], b[name]
        if sql_a != sql_b:
            out.append(f"filters.{name} SQL changed")
        out += [f"filters.{name}.{k} {params_a.get(k)!r} -> {params_b.get(k)!r}"
                for k in differing(params_a, params_b)]
    if [n for n in a if n in b] != [n for n in b if n in a]:  # the first filter to reject gives the reason
        out.append(f"filters order {list(a)} -> {list(b)}")
    return "; ".join(out)


def _decontamination_changes(old: dict, new: dict) -> str:
    """"decontamination.ngram 13 -> 10", and each reference added, removed or changed (its file's content;
    a run recorded before the content was part of the version has names alone, read as changed)."""
    out = [f"decontamination.{k} {old.get(k)!r} -> {new.get(k)!r}" for k in differing(old, new) if k != "references"]
    a, b = ({r if isinstance(r, str) else r[0]: r for r in side.get("references") or []} for side in (old, new))
    out += [f"decontamination.references {name} added" for name in b if name not in a]
    out += [f"decontamination.references {name} removed" for name in a if name not in b]
    out += [f"decontamination.references {name} changed" for name in b if name in a and a[name] != b[name]]
    return "; ".join(out) or "decontamination.references order"


def changes(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    """What differs between two configs' stage inputs, each key once."""
    a = {k: v for own in old.values() for k, v in own.items()}
    b = {k: v for own in new.values() for k, v in own.items()}
    return [describe(key, a.get(key), b.get(key)) for key in differing(a, b)]


def changed_stages(recorded: dict | None, config: Config) -> list[str]:
    """The stages, in pipeline order, whose tables were made under a config with other results than this
    one's (`recorded` is what the latest run recorded, None for a new run directory). Raising `rounds`
    alone changes none: the earlier rounds' tables are what a run with more rounds makes too."""
    if not recorded:
        return []
    now = versions(config)
    stale = [s for s in STAGES if recorded["versions"].get(s) not in (None, now[s])]
    return [] if _only_more_rounds(recorded, config, stale) else stale


def _only_more_rounds(recorded: dict, config: Config, stale: list[str]) -> bool:
    rounds = recorded.get("inputs", {}).get("generate", {}).get("rounds")
    if not isinstance(rounds, int) or config.rounds <= rounds:
        return False
    before = versions(dataclasses.replace(config, rounds=rounds))
    return all(recorded["versions"].get(s) == before[s] for s in stale)


def _canonical(value) -> str:
    """`value` as the JSON it is recorded as: a tuple in a config and the list read back from the run log
    are the same."""
    return json.dumps(value, sort_keys=True, default=str)


def requests(inputs: dict[str, dict]) -> dict[str, str]:
    """Per stage, a hash of what its requests are made of, from a config's `inputs`: its own inputs other
    than `selects`, and the text of the stages it renders (`text_from`). Under two configs with the same
    hash a stage sends the same request for the same input row."""
    out: dict[str, str] = {}
    for stage, dep in STAGES.items():  # in pipeline order: the stages it renders come first
        own = {k: v for k, v in inputs.get(stage, {}).items() if k not in dep.selects}
        out[stage] = content_id(_canonical(own), *(out[s] for s in dep.text_from))
    return out


def same_rows(old: dict[str, dict], new: dict[str, dict], stage: str) -> bool:
    """Whether `stage` makes the same rows of an input row under two configs' `inputs`: its own inputs are
    the same (`selects` too: they decide which of its rows an input row gets, and adjudication's `keep`),
    and so is the text of the stages it renders; only which input rows it is given may differ."""
    return _canonical(old.get(stage)) == _canonical(new.get(stage)) and _same_text(old, new, stage)


def same_work(old: dict[str, dict], new: dict[str, dict], stage: str) -> bool:
    """Whether `stage`'s per-row work (the keys in its `reuses`: the diversity filter's embeddings) comes
    out the same of an input row under two configs' `inputs`: those keys are the same, and so is the text
    of the stages it reads text from."""
    reuses = STAGES[stage].reuses
    return (bool(reuses) and all(old.get(stage, {}).get(k) == new.get(stage, {}).get(k) for k in reuses)
            and _same_text(old, new, stage))


def _same_text(old: dict[str, dict], new: dict[str, dict], stage: str) -> bool:
    """Whether the stages `stage` reads text from (`text_from`) send the same requests, and so make the
    same text, under two configs' `inputs`."""
    before, after = requests(old), requests(new)
    return all(before[s] == after[s] for s in STAGES[stage].text_from)


def asks_anew(recorded: dict, config: Config) -> dict[str, bool]:
    """Per LLM stage, whether the change alters the requests it sends (so that few are in the call cache),
    rather than only which rows it asks about."""
    old, new = requests(recorded.get("inputs", {})), requests(inputs(config))
    return {stage: old[stage] != new[stage] for stage, dep in STAGES.items() if dep.models}


def only_selects(recorded: dict, config: Config, stage: str) -> bool:
    """Whether the change leaves every request `stage` sends as it was and alters only which rows it asks
    about: its own changed inputs are all `selects`, and no stage it reads from changed."""
    old, new, now = recorded.get("inputs", {}).get(stage), inputs(config)[stage], versions(config)
    dep = STAGES[stage]
    return (old is not None and set(differing(old, new)) <= set(dep.selects)
            and all(recorded["versions"].get(r) == now[r] for r in dep.reads))


def record(config: Config) -> dict:
    """What a run records of its config's versions (kept in the `runs` table)."""
    return {"versions": versions(config), "inputs": json.loads(json.dumps(inputs(config), default=str))}
