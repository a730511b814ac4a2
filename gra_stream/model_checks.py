"""The checks of one `[[models]]` entry, run by `config.validate` before any model loads: each error is
one line naming the config file, the key, the model and what it takes."""
from __future__ import annotations

import re
from pathlib import Path

from gra_stream.errors import UserError

STRUCTURED_OUTPUTS = ("json_schema", "json_object", "none")  # how openai replies keep to their schema (openai_http.py)


def check_model(source: str, m) -> None:
    """Raise a UserError for the first thing wrong with model spec `m` (a config.ModelSpec)."""
    s = source
    if m.backend not in ("vllm", "fake", "openai"):
        raise UserError(f"{s}: models.backend = {m.backend!r} (model {m.name!r}) must be vllm, openai or fake")
    if m.backend == "openai" and not m.url.startswith(("http://", "https://")):
        raise UserError(f"{s}: models.url = {m.url!r} (model {m.name!r}) must be an http(s) URL for the openai backend, "
                        f"e.g. http://127.0.0.1:8000/v1")
    if not (1 <= m.max_in_flight <= 4096 and m.timeout_s > 0 and 0 <= m.max_retries <= 20):
        raise UserError(f"{s}: model {m.name!r}: max_in_flight must be 1..4096, timeout_s > 0, max_retries 0..20")
    for key in ("requests_per_minute", "tokens_per_minute", "price_input", "price_output"):
        if getattr(m, key) < 0:
            raise UserError(f"{s}: models.{key} = {getattr(m, key)} (model {m.name!r}) must be 0 (none) or more")
    if m.max_tokens < 0:
        raise UserError(f"{s}: models.max_tokens = {m.max_tokens} (model {m.name!r}) must be 0 (role budgets) or more")
    for key, low, high in (("repetition_penalty", 1.0, 2.0), ("temperature", 0.0, 2.0)):
        if not low <= getattr(m, key) <= high:
            raise UserError(f"{s}: models.{key} = {getattr(m, key)} (model {m.name!r}) must be between {low:g} and {high:g}")
    if m.structured_output != "json_schema" and (m.backend != "openai" or m.structured_output not in STRUCTURED_OUTPUTS):
        raise UserError(f"{s}: models.structured_output = {m.structured_output!r} (model {m.name!r}) must be one of "
                        f"{', '.join(STRUCTURED_OUTPUTS)}, and other than json_schema only for the openai backend")
    # the provider judges the level itself (its names differ from model to model): here only its shape
    if m.reasoning_effort and (m.backend != "openai" or not re.fullmatch(r"[a-z]+", m.reasoning_effort)):
        raise UserError(f"{s}: models.reasoning_effort = {m.reasoning_effort!r} (model {m.name!r}) must be a level such "
                        f"as \"minimal\", \"none\" or \"low\", and is for the openai backend only")
    if m.reasoning_tokens < 0 or (m.reasoning_tokens and m.backend != "openai"):
        raise UserError(f"{s}: models.reasoning_tokens = {m.reasoning_tokens} (model {m.name!r}) must be 0 or more, "
                        f"and more than 0 only for the openai backend")
    if m.reasoning_effort and (m.temperature, m.top_p) != (1.0, 1.0):  # what the request leaves out is what they use
        raise UserError(f"{s}: model {m.name!r} has a reasoning_effort: reasoning models sample at temperature 1 and "
                        f"top_p 1 only; set temperature = 1.0 and top_p = 1.0 (now {m.temperature:g} and {m.top_p:g})")
    if m.backend == "openai" and not m.api_model and m.path.startswith("embedded:"):  # a server never serves that name
        raise UserError(f"{s}: model {m.name!r} (backend openai) has no api_model: set it to the name its server "
                        f"serves the model under, e.g. \"gpt-4o-mini\" or vllm serve's --served-model-name")
    if m.backend == "vllm" and not m.path.startswith("embedded:") and "/" in m.path and m.path.startswith(("/", ".")) \
            and not Path(m.path).exists():
        raise UserError(f"{s}: models.path = {m.path!r} (model {m.name!r}) does not exist; "
                        f"give a model folder or embedded:smollm2")
