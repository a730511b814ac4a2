"""Near-duplicate detection: gra-stream's batch MinHash + band join against a straightforward
per-document `datasketch.MinHash.update` loop with `MinHashLSH`, on the same data and parameters.

Data: the Alpaca 52k English instructions (with their input), plus planted near-duplicates: a small
random edit (a word dropped, two words swapped, a word changed, or punctuation/case changes) of 5% of
the rows. Both sides use the same shingles (character 5-grams), the same shingle hash (the loop gets
it as datasketch's `hashfunc`, in plain Python; ours computes it for the whole batch in numpy), num_perm,
bands and threshold, so the signatures are bit-identical (tests/test_minhash.py) and so are the pairs
found: the comparison is of speed, with precision and recall on the planted pairs printed for both.

    python benchmarks/dedup.py [--rows 52002] [--bands 32]
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from pathlib import Path

import numpy as np
from datasketch import MinHash, MinHashLSH

from gra_stream.minhash import band_keys, shingle_hash, shingles, signatures

ALPACA = Path(__file__).resolve().parent.parent / "data" / "seeds" / "alpaca_52k_en.jsonl.gz"
GOAL = "goal: >= 5x the straightforward loop's docs/s at equal or better recall"


def corpus(rows: int, seed: int = 0) -> tuple[list[str], set[tuple[int, int]]]:
    texts = []
    with gzip.open(ALPACA, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            texts.append((r["en_instruction"] + " " + r["en_input"]).strip())
            if len(texts) >= rows:
                break
    rng = random.Random(seed)
    planted = set()
    for i in rng.sample(range(len(texts)), len(texts) // 20):
        words = texts[i].split()
        if len(words) < 4:
            continue
        kind = rng.randrange(4)
        j = rng.randrange(len(words) - 1)
        if kind == 0:
            del words[j]
        elif kind == 1:
            words[j], words[j + 1] = words[j + 1], words[j]
        elif kind == 2:
            words[j] = words[j][::-1]
        else:
            words = [w.upper() if rng.random() < 0.3 else w for w in words] + ["!"]
        planted.add((i, len(texts)))
        texts.append(" ".join(words))
    return texts, planted


def ours(texts, num_perm, bands, threshold, batch=8192):
    """Batch signatures and band keys; candidates are rows sharing a band key; verified by estimated Jaccard."""
    sigs = np.concatenate([signatures(texts[s:s + batch], num_perm=num_perm) for s in range(0, len(texts), batch)])
    keys = band_keys(sigs, bands)
    doc = np.repeat(np.arange(len(texts)), bands)
    flat = keys.ravel()
    order = np.argsort(flat, kind="stable")
    flat, doc = flat[order], doc[order]
    pairs = set()
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    ends = np.r_[starts[1:], len(flat)]
    for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
        members = np.unique(doc[s:e])
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                pairs.add((int(members[x]), int(members[y])))
    if not pairs:
        return set()
    a, b = np.array(sorted(pairs)).T
    scores = (sigs[a] == sigs[b]).mean(axis=1)
    return {(int(x), int(y)) for x, y, s in zip(a, b, scores) if s >= threshold}


def straightforward(texts, num_perm, bands, threshold):
    lsh = MinHashLSH(num_perm=num_perm, params=(bands, num_perm // bands))
    hashes = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=num_perm, scheme="legacy", hashfunc=shingle_hash)
        for s in shingles(text):
            m.update(s)
        hashes.append(m)
        lsh.insert(i, m)
    found = set()
    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            if j != i and m.jaccard(hashes[j]) >= threshold:
                found.add((min(i, j), max(i, j)))
    return found


def score(found, planted):
    involving = {p for p in found if p[1] >= min(b for _, b in planted)} if planted else set()
    recall = len(found & planted) / len(planted)
    precision = len(found & planted) / len(involving) if involving else 1.0
    return precision, recall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=52002)
    ap.add_argument("--num-perm", type=int, default=120)
    ap.add_argument("--bands", type=int, default=20)
    ap.add_argument("--threshold", type=float, default=0.7)
    args = ap.parse_args()
    texts, planted = corpus(args.rows)
    print(f"{len(texts):,} documents ({len(planted):,} planted near-duplicates), num_perm {args.num_perm}, "
          f"{args.bands} bands, threshold {args.threshold}")
    print(GOAL)
    results = {}
    for name, fn in (("gra-stream batch MinHash + band join", ours),
                     ("datasketch MinHash.update loop + MinHashLSH", straightforward)):
        t0 = time.perf_counter()
        found = fn(texts, args.num_perm, args.bands, args.threshold)
        elapsed = time.perf_counter() - t0
        precision, recall = score(found, planted)
        results[name] = len(texts) / elapsed
        print(f"{name:<46} {elapsed:7.1f} s  {len(texts) / elapsed:9,.0f} docs/s  pairs {len(found):6,}  "
              f"planted precision {precision:.3f} recall {recall:.3f}")
    a, b = results.values()
    print(f"speed-up: {a / b:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
