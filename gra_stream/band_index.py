"""The gate's search for earlier near-duplicates: every passed sample sharing an LSH band key with a row of
the batch is a candidate, its estimated Jaccard the share of equal MinHash values, and the best candidate
at or above the threshold (the smallest id among equals) is the row's earlier match.

Doing that in DuckDB meant decoding the band-key lists of every earlier sample for every batch. Here each
gates segment gets a sidecar once (derived data, under
DIR/.index/gate/<key>/, rebuilt if deleted), written the first time a later batch reads the segment:
- `<segment>.npy`: a bitmap of its band keys (BITS_PER_KEY bits per key), the keys of its passed rows,
  sorted, with the row each key belongs to, and the rows' ids;
- `<segment>.minhash.npy`: the rows' signatures, read through a memory map, candidates' rows only.
A batch checks each of its distinct keys against a segment's bitmap first, and only the few that get
past it (the keys the segment has, and about one in BITS_PER_KEY of the others) are binary-searched in
the segment's sorted keys, memory-mapped so that only the pages touched are read: the cost follows the
batch's keys, not the earlier segments' keys. Segments never change, so a sidecar never goes stale; the key of the folder names the signature layout
(num_perm, bands) and the sidecar format.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl

from gra_stream.store import EMPTY_SEGMENT, Store, map_arrays, save_arrays

SIDECAR_FORMAT = 2  # 2: a bitmap of the keys first, rows as int32
BITS_PER_KEY = 16  # bitmap bits per band key: about 1 in 16 absent keys gets past it


class EarlierIndex:
    def __init__(self, store: Store, num_perm: int, bands: int):
        self.store, self.num_perm, self.bands = store, num_perm, bands
        key = hashlib.sha256(f"{num_perm}\x1f{bands}\x1f{SIDECAR_FORMAT}".encode()).hexdigest()[:12]
        self.root = store.index_dir("gate") / key

    def segments(self) -> list[Path]:
        """The gates segments committed so far."""
        return [s for s in self.store.segments("gates") if s.name != EMPTY_SEGMENT]

    def earlier_matches(self, ids: list[str], sigs: np.ndarray, keys: np.ndarray, threshold: float,
                        segments: list[Path] | None = None) -> dict:
        """id -> (earlier id, estimated Jaccard) for the rows (signatures `sigs`, band keys `keys`) that have
        a near-duplicate among the samples that passed the gate before (in `segments`, default all). The
        best match of a row over several sets of segments is the best of each set's (`better_match`): an
        estimate is a count of equal MinHash values, the same wherever it is computed."""
        if not ids:
            return {}
        best = np.full(len(ids), -1.0)
        best_other = np.zeros(len(ids), dtype="S1")
        flat = keys.ravel()
        order = np.argsort(flat, kind="stable")
        batch_keys, batch_rows = flat[order], (order // keys.shape[1])
        # each distinct key of the batch once, with the run of batch rows that have it
        first = np.flatnonzero(np.r_[True, batch_keys[1:] != batch_keys[:-1]])
        unique_keys, runs = batch_keys[first], np.diff(np.r_[first, len(batch_keys)])
        for segment in self.segments() if segments is None else segments:
            main, minhash_path = self._sidecar(segment)
            bitmap, seg_keys, seg_rows, seg_ids = map_arrays(main)
            # the bitmap rules out nearly every key the segment lacks without touching its keys; the
            # rest are looked up in the segment's sorted keys (memory-mapped: only those pages are read)
            maybe = np.flatnonzero(in_bitmap(bitmap, unique_keys))
            lo = np.searchsorted(seg_keys, unique_keys[maybe], "left")
            spans = np.searchsorted(seg_keys, unique_keys[maybe], "right") - lo
            hit = spans > 0
            if not hit.any():
                continue
            maybe, lo, spans = maybe[hit], lo[hit], spans[hit]
            # (batch row, segment row) for every shared key: each key's batch rows times its segment rows
            pairs_per_key = runs[maybe] * spans
            key_of = np.repeat(np.arange(len(maybe)), pairs_per_key)
            offset = np.arange(pairs_per_key.sum()) - np.repeat(np.cumsum(pairs_per_key) - pairs_per_key, pairs_per_key)
            batch_at = first[maybe][key_of] + offset // spans[key_of]
            seg_at = lo[key_of] + offset % spans[key_of]
            pairs = np.unique(batch_rows[batch_at].astype(np.int64) * len(seg_ids) + seg_rows[seg_at])
            rows, others = pairs // len(seg_ids), pairs % len(seg_ids)
            minhash = np.load(minhash_path, mmap_mode="r")
            scores = (sigs[rows] == minhash[others]).sum(axis=1) / self.num_perm
            del minhash
            keep = scores >= threshold
            rows, other_ids, scores = rows[keep], np.asarray(seg_ids[others[keep]]), scores[keep]
            if not len(rows):
                continue
            # per row, the best of this segment (highest score, then smallest id), then against the best so far
            order = np.lexsort((other_ids, -scores, rows))
            rows, other_ids, scores = rows[order], other_ids[order], scores[order]
            firsts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            rows, other_ids, scores = rows[firsts], other_ids[firsts], scores[firsts]
            if best_other.itemsize < other_ids.itemsize:
                best_other = best_other.astype(other_ids.dtype)
            better = (scores > best[rows]) | ((scores == best[rows]) & (other_ids < best_other[rows]))
            best[rows[better]], best_other[rows[better]] = scores[better], other_ids[better]
        found = np.flatnonzero(best >= 0)
        return {ids[i]: (best_other[i].decode(), float(best[i])) for i in found.tolist()}

    def _sidecar(self, segment: Path) -> tuple[Path, Path]:
        """The sidecar of a gates segment, made from the segment the first time it is needed."""
        main = self.root / f"{segment.stem}.npy"
        minhash_path = self.root / f"{segment.stem}.minhash.npy"
        if not (main.exists() and minhash_path.exists()):  # one deleted (docs/resuming.md): both again
            data = pl.read_parquet(segment, columns=["id", "passed", "minhash", "bands"]).filter(pl.col("passed"))
            sigs = data["minhash"].list.to_array(self.num_perm).to_numpy().reshape(-1, self.num_perm).astype(np.uint32)
            bands = data["bands"].list.to_array(self.bands).to_numpy().reshape(-1, self.bands).astype(np.uint64)
            flat = bands.ravel()
            order = np.argsort(flat, kind="stable")
            encoded = [i.encode() for i in data["id"].to_list()]
            save_arrays(minhash_path, [sigs])  # first: the main file's presence says the sidecar is whole
            save_arrays(main, [key_bitmap(flat), flat[order], (order // self.bands).astype(np.int32),
                               np.array(encoded, dtype=f"S{max(map(len, encoded), default=1)}")])
        return main, minhash_path


def better_match(a: tuple[str, float] | None, b: tuple[str, float] | None) -> tuple[str, float] | None:
    """The better of two (earlier id, estimated Jaccard) matches: the higher estimate, then the smaller id."""
    if a is None or b is None:
        return a or b
    return a if (a[1], b[0]) > (b[1], a[0]) else b


def key_bitmap(keys: np.ndarray) -> np.ndarray:
    """BITS_PER_KEY bits per key (a power of two, at least 64), one set for each key: a key whose bit is
    clear is not among `keys`, and about one absent key in BITS_PER_KEY finds its bit set."""
    bits = max(64, 1 << int(BITS_PER_KEY * max(1, len(keys)) - 1).bit_length())
    slots = _slots(keys, bits)
    bitmap = np.zeros(bits // 8, dtype=np.uint8)
    np.bitwise_or.at(bitmap, slots >> np.uint64(3), (1 << (slots & np.uint64(7))).astype(np.uint8))
    return bitmap


def in_bitmap(bitmap: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each key's bit is set: True for every key the bitmap was made from."""
    slots = _slots(keys, len(bitmap) * 8)
    return ((bitmap[slots >> np.uint64(3)] >> (slots & np.uint64(7)).astype(np.uint8)) & 1).astype(bool)


def _slots(keys: np.ndarray, bits: int) -> np.ndarray:
    """Each key's bit: the top bits of the key times an odd constant (Fibonacci hashing). A band key's
    own top bits barely depend on the band's last MinHash row, so two keys that differ only there would
    share a bit."""
    with np.errstate(over="ignore"):
        return (keys * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(65 - bits.bit_length())
