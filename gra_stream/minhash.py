"""Batch MinHash signatures and LSH band keys, computed for a whole batch at once in numpy.

Shingles are the character 5-grams of the normalised text (lower case, single spaces), taken over its
UTF-8 bytes; each is hashed with a polynomial hash finished by a 32-bit avalanche mix (`shingle_hash`,
also available per shingle so datasketch can use the very same function). Permutations are datasketch's
own (legacy scheme), so a signature equals `datasketch.MinHash(hashfunc=shingle_hash)` over the same
shingles, bit for bit; only the loop is gone. LSH banding is a join: each band of a signature becomes one
64-bit key, and documents sharing a key are candidates (gra_stream/band_index.py finds them across segments).
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64((1 << 32) - 1)
SHINGLE = 5
_SPACES = re.compile(r"\s+")
_BASE = np.uint64(1_000_003)
_ROWS_PER_CHUNK = 1_024  # shingles permuted at once: the (rows x num_perm) temporaries stay in the CPU cache
_TEXTS_PER_CHUNK = 2_048  # texts whose shingles are hashed at once: a gate batch's temporaries stay small


def normalise(text: str) -> bytes:
    return _SPACES.sub(" ", text.lower()).strip().encode("utf-8")


def _mix32(h: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finaliser, vectorised: spreads every input bit over the whole hash."""
    h = h & MAX_HASH
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & MAX_HASH
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & MAX_HASH
    h ^= h >> np.uint64(16)
    return h


def _window_hashes(data: np.ndarray, k: int) -> np.ndarray:
    """Hash of every k-byte window of `data` (uint8), as uint64 values below 2**32."""
    with np.errstate(over="ignore"):
        h = np.zeros(len(data) - k + 1, dtype=np.uint64)
        for j in range(k):
            h = h * _BASE + data[j: len(data) - k + 1 + j].astype(np.uint64)
    return _mix32(h)


def shingle_hash(shingle: bytes) -> int:
    """The hash of one shingle in plain Python, for datasketch's `hashfunc`: equal to the vectorised one."""
    h = 0
    for byte in shingle:
        h = (h * 1_000_003 + byte) & 0xFFFFFFFFFFFFFFFF
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def shingles(text: str, k: int = SHINGLE) -> list[bytes]:
    data = normalise(text)
    if len(data) <= k:
        return [data]
    return [data[i:i + k] for i in range(len(data) - k + 1)]


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's legacy permutations (a, b), drawn as `datasketch.MinHash(scheme="legacy")` draws them
    (tests/test_minhash.py checks they are equal). Not imported from it: datasketch imports scipy, half a
    second of every worker's start."""
    gen = np.random.RandomState(seed)
    pairs = [(gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64))
             for _ in range(num_perm)]
    a, b = np.array(pairs, dtype=np.uint64).T
    return a, b


def shingle_hashes(texts: list[str], k: int = SHINGLE) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, owner row) of every shingle of every text, computed over the texts' bytes at once."""
    encoded = [normalise(t) for t in texts]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(texts) else np.zeros(0, dtype=np.int64)
    owner_of_byte = np.repeat(np.arange(len(texts)), lengths)
    hashes, owners = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    if len(data) >= k:
        window = _window_hashes(data, k)
        pos = np.arange(len(window))
        inside = pos + k <= (starts + lengths)[owner_of_byte[: len(window)]]  # no window spans two texts
        hashes, owners = window[inside], owner_of_byte[: len(window)][inside]
    short = np.flatnonzero(lengths < k)  # a text shorter than k is one shingle: itself
    if len(short):
        extra = np.array([shingle_hash(encoded[i]) if lengths[i] else int(_mix32(np.zeros(1, dtype=np.uint64))[0])
                          for i in short], dtype=np.uint64)
        hashes, owners = np.concatenate([hashes, extra]), np.concatenate([owners, short])
        order = np.argsort(owners, kind="stable")
        hashes, owners = hashes[order], owners[order]
    return hashes, owners


def signatures(texts: list[str], *, num_perm: int, k: int = SHINGLE, seed: int = 1) -> np.ndarray:
    """One uint32 MinHash signature per text, shape (len(texts), num_perm)."""
    out = np.empty((len(texts), num_perm), dtype=np.uint32)
    for start in range(0, len(texts), _TEXTS_PER_CHUNK):
        out[start:start + _TEXTS_PER_CHUNK] = _signatures(texts[start:start + _TEXTS_PER_CHUNK], num_perm, k, seed)
    return out


def _signatures(texts: list[str], num_perm: int, k: int, seed: int) -> np.ndarray:
    a, b = permutations(num_perm, seed)
    out = np.full((len(texts), num_perm), MAX_HASH, dtype=np.uint64)
    hv, own = shingle_hashes(texts, k)
    for start in range(0, len(hv), _ROWS_PER_CHUNK):
        chunk, who = hv[start:start + _ROWS_PER_CHUNK, None], own[start:start + _ROWS_PER_CHUNK]
        permuted = chunk * a  # (a * h + b) mod 2**64, as datasketch's uint64 arithmetic wraps
        permuted += b
        _mod_mersenne(permuted)
        permuted &= MAX_HASH
        # rows are grouped by owner: reduce each owner's run of rows, then fold into the output (each owner
        # once per chunk, so plain indexing, not the slower minimum.at)
        runs = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
        owners = who[runs]
        out[owners] = np.minimum(out[owners], np.minimum.reduceat(permuted, runs, axis=0))
    return out.astype(np.uint32)


def _mod_mersenne(x: np.ndarray) -> None:
    """x %= 2**61 - 1, in place, for uint64 x: with p = 2**61 - 1, x = (x >> 61) * 2**61 + (x & p) is
    congruent to (x >> 61) + (x & p) <= p + 7, so one conditional subtraction finishes it. Equal to `%`
    (tested), without numpy's per-element 64-bit division."""
    high = x >> np.uint64(61)
    x &= MERSENNE_PRIME
    x += high
    x[x >= MERSENNE_PRIME] -= MERSENNE_PRIME


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
