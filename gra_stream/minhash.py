"""Batch MinHash signatures and LSH band keys, bit-identical to datasketch's legacy scheme.

datasketch hashes a document's shingles with SHA-1 and permutes them one document at a time; here the
permutation and the min-reduction run over a whole batch in numpy, using datasketch's own permutations.
LSH banding is a join: each band of a signature becomes one 64-bit key, and two documents are
candidates when they share a key, which DuckDB finds over any number of Parquet segments.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from datasketch import MinHash
from datasketch.hashfunc import sha1_hash32

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64((1 << 32) - 1)
_WORD = re.compile(r"\w+", re.UNICODE)
_ROWS_PER_CHUNK = 65_536  # shingles permuted at once: bounds the temporary (rows x num_perm) matrix


def shingles(text: str, n: int) -> list[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) <= n:
        return [" ".join(words).encode()] if words else [b""]
    return sorted({" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)})


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="legacy").permutations
    return a.astype(np.uint64), b.astype(np.uint64)


def signatures(texts: list[str], *, num_perm: int, shingle_words: int, seed: int = 1) -> np.ndarray:
    """One uint32 MinHash signature per text, shape (len(texts), num_perm)."""
    a, b = permutations(num_perm, seed)
    out = np.empty((len(texts), num_perm), dtype=np.uint64)
    hashes: list[int] = []
    owners: list[int] = []
    for i, text in enumerate(texts):
        hs = [sha1_hash32(s) for s in shingles(text, shingle_words)]
        hashes.extend(hs)
        owners.extend([i] * len(hs))
    hv = np.asarray(hashes, dtype=np.uint64)
    own = np.asarray(owners, dtype=np.int64)
    out.fill(MAX_HASH)
    for start in range(0, len(hv), _ROWS_PER_CHUNK):
        chunk = hv[start:start + _ROWS_PER_CHUNK, None]
        permuted = ((chunk * a + b) % MERSENNE_PRIME) & MAX_HASH
        np.minimum.at(out, own[start:start + _ROWS_PER_CHUNK], permuted)
    return out.astype(np.uint32)


def band_keys(sigs: np.ndarray, bands: int) -> np.ndarray:
    """One uint64 key per (document, band): a polynomial hash of the band's rows, salted by band index."""
    n, num_perm = sigs.shape
    rows = num_perm // bands
    view = sigs.reshape(n, bands, rows).astype(np.uint64)
    key = np.broadcast_to(np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15), (n, bands)).copy()
    with np.errstate(over="ignore"):
        for r in range(rows):
            key = key * np.uint64(1_000_003) + view[:, :, r]
            key ^= key >> np.uint64(29)
    return key


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.count_nonzero(sig_a == sig_b)) / len(sig_a)
