"""The diversity filter's embedder, all-MiniLM-L6-v2, on Alpaca instructions: texts per second, and
whether a text's vector is the one it gets embedded alone. `MiniLMEmbedder.embed` (texts grouped by token
length, unpadded, each batch on one thread, as many batches at once as the process has torch threads) on
every core (the runner's threads) and on one (a worker's), against padded batches of 128 in input order
(the code before 2026-12-05, kept here as the reference) on the same.

    python benchmarks/embedding.py [--texts 2000]
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import ALPACA  # noqa: E402

from gra_stream.embeddings import DIM, MiniLMEmbedder  # noqa: E402


def padded(embedder: MiniLMEmbedder, texts: list[str], batch: int = 128) -> np.ndarray:
    """Batches of `batch` texts in input order, padded to the longest, mean-pooled over the mask."""
    parts = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            enc = embedder.tokenizer(texts[start:start + batch], padding=True, truncation=True, max_length=256,
                                     return_tensors="pt")
            hidden = embedder.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            parts.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, DIM), dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=2000)
    args = ap.parse_args()
    with gzip.open(ALPACA, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["en_instruction"] for line, _ in zip(f, range(args.texts))]
    embedder = MiniLMEmbedder()
    cores = torch.get_num_threads()

    def on(threads: int, way):
        def embed(batch: list[str]) -> np.ndarray:
            torch.set_num_threads(threads)
            try:
                return way(batch)
            finally:
                torch.set_num_threads(cores)
        return embed
    ways = {f"gra-stream: by length, {cores} thread(s)": embedder.embed,
            "gra-stream: by length, 1 thread": on(1, embedder.embed),
            f"before: padded, {cores} thread(s)": on(cores, lambda batch: padded(embedder, batch)),
            "before: padded, 1 thread": on(1, lambda batch: padded(embedder, batch))}
    print(f"{len(texts):,} Alpaca instructions; goal: every vector the same as the text's alone, and no slower")
    for name, embed in ways.items():
        t0 = time.perf_counter()
        vectors = embed(texts)
        seconds = time.perf_counter() - t0
        alone = np.concatenate([embed([t]) for t in texts[:100]])
        differ = int((vectors[:100] != alone).any(axis=1).sum())
        print(f"{name:37} {len(texts) / seconds:6.0f} texts/s   differ from the text embedded alone: {differ} of 100",
              flush=True)
    largest = np.abs(embedder.embed(texts) - padded(embedder, texts)).max()
    print(f"largest difference between the two ways: {largest:.1e}")


if __name__ == "__main__":
    main()
