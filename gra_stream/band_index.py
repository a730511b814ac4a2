"""The gate's search for earlier near-duplicates: every passed sample sharing an LSH band key with a row of
the batch is a candidate, its estimated Jaccard the share of equal MinHash values, and the best candidate
at or above the threshold (the smallest id among equals) is the row's earlier match.

Doing that in DuckDB meant decoding the band-key lists of every earlier sample for every batch: 17M keys
per batch at 1M samples. Here each gates segment gets a sidecar once (derived data, under
DIR/.index/gate/<key>/, rebuilt if deleted), written the first time a later batch reads the segment:
- `<segment>.npy`: the band keys of its passed rows, sorted, with the row each key belongs to, and the
  rows' ids;
- `<segment>.minhash.npy`: the rows' signatures, read through a memory map, candidates' rows only.
A batch then binary-searches its own sorted keys once per segment. Segments never change, so a sidecar
never goes stale; the key of the folder names the signature layout (num_perm, bands).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from gra_stream.store import EMPTY_SEGMENT, Store, save_arrays

SIDECAR_FORMAT = 1


class EarlierIndex:
    def __init__(self, store: Store, num_perm: int, bands: int):
        self.store, self.num_perm, self.bands = store, num_perm, bands
        key = hashlib.sha256(f"{num_perm}\x1f{bands}\x1f{SIDECAR_FORMAT}".encode()).hexdigest()[:12]
        self.root = store.root / ".index" / "gate" / key

    def earlier_matches(self, ids: list[str], sigs: np.ndarray, keys: np.ndarray, threshold: float) -> dict:
        """id -> (earlier id, estimated Jaccard) for the rows (signatures `sigs`, band keys `keys`) that have
        a near-duplicate among the samples that passed the gate before."""
        if not ids:
            return {}
        best = np.full(len(ids), -1.0)
        best_other = np.zeros(len(ids), dtype="S1")
        flat = keys.ravel()
        order = np.argsort(flat, kind="stable")
        batch_keys, batch_rows = flat[order], (order // keys.shape[1])
        for segment in self.store.segments("gates"):
            if segment.name == EMPTY_SEGMENT:
                continue
            main, minhash_path = self._sidecar(segment)
            with open(main, "rb") as f:
                seg_keys, seg_rows, seg_ids = np.load(f), np.load(f), np.load(f)
            lo = np.searchsorted(batch_keys, seg_keys)
            hit = np.flatnonzero(batch_keys[np.minimum(lo, len(batch_keys) - 1)] == seg_keys)
            if not len(hit):
                continue
            # (batch row, segment row) for every shared key, each pair once
            spans = np.searchsorted(batch_keys, seg_keys[hit], "right") - lo[hit]
            starts = np.repeat(lo[hit], spans) + (np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans))
            pairs = np.unique(batch_rows[starts].astype(np.int64) * len(seg_ids) + np.repeat(seg_rows[hit], spans))
            rows, others = pairs // len(seg_ids), pairs % len(seg_ids)
            minhash = np.load(minhash_path, mmap_mode="r")
            scores = (sigs[rows] == minhash[others]).sum(axis=1) / self.num_perm
            del minhash
            keep = scores >= threshold
            rows, other_ids, scores = rows[keep], seg_ids[others[keep]], scores[keep]
            if not len(rows):
                continue
            # per row, the best of this segment (highest score, then smallest id), then against the best so far
            order = np.lexsort((other_ids, -scores, rows))
            rows, other_ids, scores = rows[order], other_ids[order], scores[order]
            first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            rows, other_ids, scores = rows[first], other_ids[first], scores[first]
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
        if not main.exists():
            data = pq.read_table(segment, columns=["id", "passed", "minhash", "bands"])
            data = data.filter(data.column("passed"))
            n = data.num_rows
            sigs = (data.column("minhash").combine_chunks().values.to_numpy(zero_copy_only=False)
                    .reshape(n, self.num_perm).astype(np.uint32) if n else np.zeros((0, self.num_perm), np.uint32))
            bands = (data.column("bands").combine_chunks().values.to_numpy(zero_copy_only=False)
                     .reshape(n, self.bands).astype(np.uint64) if n else np.zeros((0, self.bands), np.uint64))
            flat = bands.ravel()
            order = np.argsort(flat, kind="stable")
            encoded = [i.encode() for i in data.column("id").to_pylist()]
            save_arrays(minhash_path, [sigs])  # first: the main file's presence says the sidecar is whole
            save_arrays(main, [flat[order], (order // self.bands).astype(np.int64),
                               np.array(encoded, dtype=f"S{max(map(len, encoded), default=1)}")])
        return main, minhash_path
