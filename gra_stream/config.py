"""Run configuration: frozen dataclasses loaded from TOML, validated before any model is loaded.

Every error names the file, the key, the value and the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gra_stream import resources
from gra_stream.errors import UserError
from gra_stream.model_checks import check_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

DEFAULT_CONFIG = resources.config_file("default.toml")
SQL_DIR = resources.sql_dir()


@dataclass(frozen=True)
class Fields:
    """Which seed fields hold the instruction, its input and the response: a name in any capitalisation, a
    dotted path, a DuckDB expression, or `chat` turns; empty: the common names (gra_stream/fields.py)."""
    instruction: str = ""
    input: str = ""
    response: str = ""
    chat: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the pool. backend: "vllm" (in-process engine), "openai" (an OpenAI-compatible server
    at `url`) or "fake" (deterministic, no model)."""
    name: str
    backend: str = "vllm"
    path: str = "embedded:smollm2"
    url: str = ""                  # openai backend: base URL, e.g. http://127.0.0.1:8000/v1
    api_model: str = ""            # openai backend: the served model name (default: path, if set)
    api_key_env: str = ""          # openai backend: environment variable holding the API key (sent as a bearer token)
    headers: tuple[tuple[str, str], ...] = ()  # openai backend: extra headers, each name -> environment variable
    max_in_flight: int = 64        # openai backend: concurrent requests to this endpoint (the adaptive limit's ceiling)
    adaptive: bool = True          # openai backend: fewer requests in flight after HTTP 429 and timeouts, more while fine
    requests_per_minute: float = 0.0  # openai backend: request budget (0: none)
    tokens_per_minute: float = 0.0    # openai backend: token budget, prompt + max_tokens per request (0: none)
    timeout_s: float = 120.0       # openai backend: per request
    structured_output: str = "json_schema"  # openai backend: one of model_checks.STRUCTURED_OUTPUTS
    reasoning_effort: str = ""     # openai backend: set for OpenAI's reasoning models (backends.md), "" for the others
    reasoning_tokens: int = 0      # openai backend: tokens added to every role's budget for a model that reasons in it
    max_retries: int = 5           # openai backend: transport-level retries (429, 5xx, timeouts, garbage)
    price_input: float = 0.0       # cost of a million prompt tokens (any currency), for status and report
    price_output: float = 0.0      # cost of a million completion tokens
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    max_tokens: int = 0            # caps every role's token budget (0: the role's own budget)
    trust_remote_code: bool = False   # some hub models (InternLM3) ship their own model code
    latency_s: float = 0.0         # fake backend only: seconds each batch of calls takes (for tests and demos)


@dataclass(frozen=True)
class Vllm:
    """Settings passed to every in-process vLLM engine."""
    dtype: str = "auto"            # "auto": float32 on CPU (bfloat16 is slow without AVX-512 BF16), bfloat16 on GPU
    enforce_eager: bool = True
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1
    kv_cache_gib: int = 2          # VLLM_CPU_KVCACHE_SPACE on CPU
    enable_prefix_caching: bool = True
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 8192
    resident_engines: int = 0      # at most this many in-process engines loaded at once (0: the whole pool)


@dataclass(frozen=True)
class Committee:
    reviewers: int = 3
    tau: float = 8.0
    delta: float = 1.5
    min_reviews: int = 2           # fewer parsed reviews than this: the sample is rejected (insufficient_reviews)
    short_circuit: bool = True     # skip review calls whose verdict is already certain (same decisions)


@dataclass(frozen=True)
class Dedup:
    num_perm: int = 120
    bands: int = 20                # 20 bands of 6 rows: candidates from Jaccard ~0.6 up, few below
    threshold: float = 0.7         # estimated Jaccard at or above which two instructions are near-duplicates
    shingle_chars: int = 5
    # Rows per gate batch: each batch searches the band keys of every earlier gates segment once (the
    # gate's cost that grows with the corpus), so batches larger than cpu_batch_size make that pass rarer.
    batch_size: int = 16384


@dataclass(frozen=True)
class Diversity:
    """The paper's embedding filter: walk kept samples by descending committee mean and keep one only if
    its highest cosine similarity to what is already kept (and to the seeds) is below the threshold."""
    enabled: bool = True
    model: str = "embedded:all-minilm-l6-v2"   # or "hashing": a bag-of-words vector, no model
    threshold: float = 0.9
    compare_seeds: bool = True
    index: str = "ivf"            # exact until a table holds cells x 39 references, then its `probes` nearest cells; or "exact"
    cells: int = 256
    probes: int = 8
    walk_batch: int = 4096        # a walk batch's candidates are compared exactly: with "ivf", part of the results


@dataclass(frozen=True)
class Decontamination:
    """Drop samples sharing a word n-gram with a benchmark test set (reason `contaminated`), at the gate,
    before any review call is spent on them."""
    references: tuple[str, ...] = ()   # files of benchmark items, or the bundled "gsm8k_test", "humaneval"
    ngram: int = 13


@dataclass(frozen=True)
class Filters:
    enabled: tuple[str, ...] = ("min_length", "max_length", "refusal", "overlap")
    params: dict[str, Any] = field(default_factory=dict)
    directory: str = ""           # extra folder searched for NAME.sql before the bundled sql/filters


@dataclass(frozen=True)
class Ray:
    """`--executor ray`: LLM stages run on `workers` actors (each holds its own engines), CPU stages as
    Ray Data tasks, `workers` batches at a time."""
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = -1.0  # -1: vllm.tensor_parallel_size where the cluster has GPUs, else 0


@dataclass(frozen=True)
class Processes:
    """`--executor processes`: batches of the unordered stages run in `workers` processes (0: one per core)."""
    workers: int = 0


@dataclass(frozen=True)
class Waves:
    """The corpus goes through the stages in waves of seeds (gra_stream/waves.py): the first of
    `first_seeds` (a quarter of a smaller corpus, at least 16 seeds), each next one four times as large, up
    to a quarter of the corpus or four times the first wave. 0: one wave per round (the paper's whole-round
    diversity walk)."""
    first_seeds: int = 512
    overlap: bool = True  # a stage may work on a wave while an earlier stage takes the next (performance only)


ENGINE_BATCH = 256          # the default batch of an LLM stage with an in-process engine (benchmarks/saturation.py)
FAST_REPLIES_BATCH = 1024   # ... without one (benchmarks/scale.py)


@dataclass(frozen=True)
class Config:
    run_seed: int = 0
    batch_size: int = 0            # rows per committed batch of an LLM stage; 0: `llm_batch_size` decides
    cpu_batch_size: int = 4096     # rows per committed batch of a CPU stage
    tasks_per_seed: int = 1
    mode: str = "synthesis"        # synthesis | refinement | integrated (refined seeds + synthetic samples)
    rounds: int = 1                # samples kept in round r anchor the tasks of round r + 1
    tasks_per_round: int = 0       # at most this many synthesis tasks per round (0: one per anchor and tasks_per_seed)
    max_reasks: int = 1
    prompts_dir: str = ""          # a folder of NAME.txt templates that replace the bundled ones
    fields: Fields = Fields()
    models: tuple[ModelSpec, ...] = (ModelSpec(name="smollm2", repetition_penalty=1.1),)
    vllm: Vllm = Vllm()
    committee: Committee = Committee()
    dedup: Dedup = Dedup()
    diversity: Diversity = Diversity()
    decontamination: Decontamination = Decontamination()
    filters: Filters = Filters()
    ray: Ray = Ray()
    processes: Processes = Processes()
    waves: Waves = Waves()
    source: str = "<defaults>"

    @property
    def engines_in_process(self) -> bool:
        """Whether a pool model runs in an in-process vLLM engine (which uses every core, or the GPU)."""
        return any(m.backend == "vllm" for m in self.models)

    @property
    def llm_batch_size(self) -> int:
        """Rows per batch of an LLM stage: `batch_size`, or by default ENGINE_BATCH where a model runs in an
        in-process engine (a batch is one engine call, and what a kill loses: on a slow engine, many
        minutes) and FAST_REPLIES_BATCH otherwise (servers, the fake backend: with replies that come back
        fast, a batch's fixed costs, its segment and its trip to a worker, are most of its time)."""
        return self.batch_size or (ENGINE_BATCH if self.engines_in_process else FAST_REPLIES_BATCH)

    def fingerprint(self) -> str:
        data = {k: v for k, v in dataclasses.asdict(self).items() if k != "source"}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))


def share_budgets(config: Config, parts: int) -> Config:
    """The config of each of `parts` processes that call the pool at once (the processes and Ray executors):
    every model's per-minute budgets divided between them, so that together they keep to the budgets."""
    if parts <= 1:
        return config
    return dataclasses.replace(config, models=tuple(
        dataclasses.replace(m, requests_per_minute=m.requests_per_minute / parts,
                            tokens_per_minute=m.tokens_per_minute / parts) for m in config.models))


_SECTIONS = {"fields": Fields, "vllm": Vllm, "committee": Committee, "dedup": Dedup, "diversity": Diversity,
             "decontamination": Decontamination, "ray": Ray, "processes": Processes, "waves": Waves}


def _check_type(source: str, key: str, value: Any, expected: Any) -> Any:
    if expected == "tuple[tuple[str, str], ...]":  # a TOML table of strings, kept as sorted pairs (hashable)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise UserError(f"{source}: {key} = {value!r} must be a table of strings, e.g. "
                            f'{{ "X-Title" = "MY_TITLE_VARIABLE" }}')
        return tuple(sorted(value.items()))
    if expected == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{source}: {key} = {value!r} must be a list of strings")
        return tuple(value)
    kind = {"int": int, "float": float, "str": str, "bool": bool}.get(expected if isinstance(expected, str) else "")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise UserError(f"{source}: {key} = {value!r} must be {'a number' if kind is float else 'of type ' + kind.__name__}")
    return value


def _unknown_key(source: str, key: str, known: list[str], where: str) -> UserError:
    """The error for a key the config does not have: the known key it is a typo of, if one is close
    enough, else every key `where` holds."""
    section, _, name = key.rpartition(".")
    near = difflib.get_close_matches(name, known, n=1)
    if near:
        return UserError(f"{source}: unknown key {key}; did you mean {section + '.' if section else ''}{near[0]}?")
    return UserError(f"{source}: unknown key {key}; known keys in {where}: {', '.join(known)}")


def _build(cls, data: dict, source: str, prefix: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise _unknown_key(source, prefix + unknown[0], sorted(names), f"[{prefix.rstrip('.')}]")
    values = {k: _check_type(source, prefix + k, v, names[k].type) for k, v in data.items()}
    return cls(**values)


_NOT_TOP_LEVEL = {*_SECTIONS, "filters", "models", "source"}  # tables, and what the loader fills in
_TOP_LEVEL = [f.name for f in dataclasses.fields(Config) if f.name not in _NOT_TOP_LEVEL]


def _top_level_error(source: str, key: str, value: Any) -> UserError:
    """A top-level key the config does not have: a section's key written above its table (`tau = 6.0`
    before any `[committee]`), a misspelt table name, or a misspelt top-level key."""
    if not isinstance(value, dict):
        homes = [name for name, cls in _SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
        if homes:
            return UserError(f"{source}: {key} is a key of {' and '.join(f'[{h}]' for h in homes)}; write it under its table")
        return _unknown_key(source, key, _TOP_LEVEL, "the top level")
    tables = sorted([*_SECTIONS, "filters"])
    near = difflib.get_close_matches(key, tables, n=1)
    hint = f"did you mean [{near[0]}]?" if near else f"known tables: {', '.join(tables)}, and [[models]]"
    return UserError(f"{source}: unknown table [{key}]; {hint}")


def load_config(path: str | Path | None = None, *, backend: str | None = None) -> Config:
    """Load a TOML config (the bundled default when path is None), validate it, and apply `--backend`."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.exists():
        raise UserError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    return config_from_dict(raw, source=str(path), backend=backend)


def config_from_dict(raw: dict, *, source: str = "<dict>", backend: str | None = None) -> Config:
    raw = dict(raw)
    kwargs: dict[str, Any] = {"source": source}
    for name, cls in _SECTIONS.items():
        if name in raw:
            section = raw.pop(name)
            if not isinstance(section, dict):
                raise UserError(f"{source}: [{name}] must be a table")
            kwargs[name] = _build(cls, section, source, f"{name}.")
    if "filters" in raw:
        section = dict(raw.pop("filters"))
        enabled = section.pop("enabled", list(Filters.enabled))
        directory = section.pop("directory", "")
        if not isinstance(enabled, list) or not all(isinstance(x, str) for x in enabled):
            raise UserError(f"{source}: filters.enabled = {enabled!r} must be a list of filter names")
        bad = [k for k, v in section.items() if not isinstance(v, dict)]
        if bad:
            raise UserError(f"{source}: unknown key filters.{bad[0]}; filter parameters go in [filters.NAME] tables")
        kwargs["filters"] = Filters(enabled=tuple(enabled), params=section, directory=str(directory))
    if "models" in raw:
        models = raw.pop("models")
        if not isinstance(models, list) or not models:
            raise UserError(f"{source}: [[models]] must list at least one model")
        kwargs["models"] = tuple(_build(ModelSpec, m, source, "models.") for m in models)
    top = {f.name: f for f in dataclasses.fields(Config)} 
    for key, value in raw.items():
        if key not in top or key in _NOT_TOP_LEVEL:
            raise _top_level_error(source, key, raw[key])
        kwargs[key] = _check_type(source, key, value, top[key].type)
    config = Config(**kwargs)
    if backend:
        if backend not in ("fake", "vllm"):
            raise UserError(f"--backend {backend!r}: use fake or vllm (servers are configured per model)")
        config = dataclasses.replace(config, models=tuple(dataclasses.replace(m, backend=backend) for m in config.models))
        if backend == "fake":  # no model at all: the diversity filter uses the hashing embedder too
            config = dataclasses.replace(config, diversity=dataclasses.replace(config.diversity, model="hashing"))
    validate(config)
    return config


def _synthesis_keys(c: Config) -> list[str]:
    """The keys set away from their defaults that only synthesis reads, which refinement alone would ignore."""
    return [f"{key} = {getattr(c, key)}" for key in ("rounds", "tasks_per_seed", "tasks_per_round")
            if getattr(c, key) != Config.__dataclass_fields__[key].default]


def validate(c: Config) -> None:
    s = c.source
    checks = [
        (c.batch_size >= 0, f"batch_size = {c.batch_size} must be at least 1 (or 0: by the pool)"),
        (c.cpu_batch_size >= 1, f"cpu_batch_size = {c.cpu_batch_size} must be at least 1"),
        (1 <= c.tasks_per_seed <= 100, f"tasks_per_seed = {c.tasks_per_seed} must be between 1 and 100"),
        (c.mode in ("synthesis", "refinement", "integrated"),
         f"mode = {c.mode!r} must be synthesis, refinement or integrated"),
        (1 <= c.rounds <= 100, f"rounds = {c.rounds} must be between 1 and 100"),
        (c.tasks_per_round >= 0, f"tasks_per_round = {c.tasks_per_round} must be 0 (no cap) or more"),
        (c.mode != "refinement" or not _synthesis_keys(c), f"{(_synthesis_keys(c) or [''])[0]} shapes synthesis tasks, and "
         f"mode = \"refinement\" rewrites each seed's response once; leave it out, or use mode = \"integrated\""),
        (0.0 < c.diversity.threshold <= 1.0, f"diversity.threshold = {c.diversity.threshold} must be in (0, 1]"),
        (c.diversity.index in ("exact", "ivf"), f"diversity.index = {c.diversity.index!r} must be \"exact\" or \"ivf\""),
        (c.diversity.cells >= 1, f"diversity.cells = {c.diversity.cells} must be at least 1"),
        (c.diversity.probes >= 1, f"diversity.probes = {c.diversity.probes} must be at least 1"),
        (c.diversity.walk_batch >= 1, f"diversity.walk_batch = {c.diversity.walk_batch} must be at least 1"),
        (c.diversity.model in ("embedded:all-minilm-l6-v2", "hashing"),
         f"diversity.model = {c.diversity.model!r} must be \"embedded:all-minilm-l6-v2\" or \"hashing\""),
        (0 <= c.max_reasks <= 10, f"max_reasks = {c.max_reasks} must be between 0 and 10"),
        (c.committee.reviewers >= 1, f"committee.reviewers = {c.committee.reviewers} must be at least 1"),
        (1 <= c.committee.min_reviews <= c.committee.reviewers,
         f"committee.min_reviews = {c.committee.min_reviews} must be between 1 and committee.reviewers"),
        (0.0 <= c.committee.tau <= 10.0, f"committee.tau = {c.committee.tau} must be between 0 and 10"),
        (0.0 <= c.committee.delta <= 10.0, f"committee.delta = {c.committee.delta} must be between 0 and 10"),
        (5 <= c.decontamination.ngram <= 50, f"decontamination.ngram = {c.decontamination.ngram} must be between 5 and 50"),
        (all(resources.reference_path(p).is_file() for p in c.decontamination.references),
         f"decontamination.references: "
         f"{next((p for p in c.decontamination.references if not resources.reference_path(p).is_file()), '')} "
         f"is neither a file nor a bundled reference ({', '.join(resources.REFERENCES)})"),
        (c.dedup.num_perm >= 16, f"dedup.num_perm = {c.dedup.num_perm} must be at least 16"),
        (1 <= c.dedup.bands <= c.dedup.num_perm and c.dedup.num_perm % c.dedup.bands == 0,
         f"dedup.bands = {c.dedup.bands} must divide dedup.num_perm = {c.dedup.num_perm}"),
        (0.0 < c.dedup.threshold <= 1.0, f"dedup.threshold = {c.dedup.threshold} must be in (0, 1]"),
        (c.dedup.batch_size >= 1, f"dedup.batch_size = {c.dedup.batch_size} must be at least 1"),
        (1 <= c.dedup.shingle_chars <= 32, f"dedup.shingle_chars = {c.dedup.shingle_chars} must be between 1 and 32"),
        (c.vllm.resident_engines >= 0, f"vllm.resident_engines = {c.vllm.resident_engines} must be 0 (all) or more"),
        (c.ray.workers >= 1, f"ray.workers = {c.ray.workers} must be at least 1"),
        (c.ray.cpus_per_worker > 0, f"ray.cpus_per_worker = {c.ray.cpus_per_worker} must be more than 0"),
        (c.ray.gpus_per_worker == -1 or c.ray.gpus_per_worker >= 0,
         f"ray.gpus_per_worker = {c.ray.gpus_per_worker} must be -1 (auto) or 0 or more"),
        (c.waves.first_seeds >= 0, f"waves.first_seeds = {c.waves.first_seeds} must be 0 (one wave) or more"),
        (c.processes.workers >= 0, f"processes.workers = {c.processes.workers} must be 0 (one per core) or more"),
        (c.vllm.max_model_len >= 256, f"vllm.max_model_len = {c.vllm.max_model_len} must be at least 256"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(f"{s}: {message}")
    from gra_stream.prompts import check_prompts

    check_prompts(c.prompts_dir, s)
    names = [m.name for m in c.models]
    if len(set(names)) != len(names):
        raise UserError(f"{s}: two [[models]] share the name {sorted(n for n in names if names.count(n) > 1)[0]!r}")
    for m in c.models:
        check_model(s, m)
