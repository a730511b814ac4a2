"""The gate stage: SQL filters first, then MinHash near-duplicates against everything that passed before."""
import dataclasses

import numpy as np
import polars as pl
import pytest

from gra_stream.backends.pool import ModelPool
from gra_stream.band_index import better_match
from gra_stream.sql_filters import load_filters
from gra_stream.stages import Context, gate
from gra_stream.store import Store
from tests.conftest import fake_config

BASE = "Write a detailed step by step guide to planting tomatoes in a small garden during early spring"
VOCAB = BASE.lower().split() + ["soil", "water", "seed", "garden", "sun", "rain", "leaf", "root", "bloom", "harvest"]


def batch(rows):
    return pl.DataFrame([{"seed_id": "s", "domain": "language", **r} for r in rows])


def context(run_dir):
    store = Store(run_dir)
    store.init()
    config = fake_config()
    return Context(config, ModelPool(config), store.connect(), load_filters(config), store), store


def test_near_duplicates_are_found_within_a_batch_and_across_runs(tmp_path):
    ctx, store = context(tmp_path / "run")
    response = "Choose a sunny spot, loosen the soil, plant seedlings deep and water them regularly."
    first = gate.run(batch([{"id": "a", "instruction": BASE, "response": response},
                            {"id": "b", "instruction": BASE + " please", "response": response},
                            {"id": "c", "instruction": "Explain how vaccines train the immune system", "response": response}]), ctx)
    store.write_segment("gates", "first", first)
    got = {r["id"]: (r["passed"], r["reason"], r["duplicate_of"]) for r in first.iter_rows(named=True)}
    assert got == {"a": (True, "", None), "b": (False, "near_duplicate", "a"), "c": (True, "", None)}
    # a later batch (or a later run over the same directory) is compared with what passed before
    ctx2, _ = context(tmp_path / "run")
    second = gate.run(batch([{"id": "d", "instruction": "Please " + BASE, "response": response},
                             {"id": "e", "instruction": "Write a haiku about snow falling on a quiet town", "response": response}]), ctx2)
    got = {r["id"]: (r["passed"], r["reason"], r["duplicate_of"]) for r in second.iter_rows(named=True)}
    assert got == {"d": (False, "near_duplicate", "a"), "e": (True, "", None)}


def test_filtered_rows_are_not_minhashed(tmp_path):
    ctx, _ = context(tmp_path / "run")
    out = gate.run(batch([{"id": "r", "instruction": BASE, "response": "I'm sorry, but I cannot help with that."},
                          {"id": "ok", "instruction": BASE, "response": "Dig, plant, water and wait for the sun."}]), ctx)
    rows = {r["id"]: r for r in out.iter_rows(named=True)}
    assert rows["r"]["reason"] == "refusal" and rows["r"]["minhash"] is None
    assert rows["ok"]["passed"], "a filtered row must not count as the original of a near-duplicate"


# The lookup as a DuckDB query over the gates table (what the gate ran before band_index.py): the
# reference the sidecar search must equal, pair for pair, ties included.
EARLIER_SQL = """
WITH b AS (SELECT id, unnest(bands) AS band FROM batch_sigs),
     g AS (SELECT id, unnest(bands) AS band FROM gates WHERE passed),
     pairs AS (SELECT DISTINCT b.id, g.id AS other FROM g JOIN b ON g.band = b.band),
     scored AS (
        SELECT p.id, p.other,
               list_sum(list_transform(list_zip(bs.minhash, gs.minhash), lambda x: (x[1] = x[2])::INT))
                 / len(bs.minhash) AS score
        FROM pairs p JOIN batch_sigs bs ON bs.id = p.id JOIN gates gs ON gs.id = p.other)
SELECT id, other, score FROM scored WHERE score >= $threshold
QUALIFY row_number() OVER (PARTITION BY id ORDER BY score DESC, other) = 1
"""


@pytest.mark.parametrize("bits_per_key", [16, 1 / 64])  # 1/64: a 64-bit bitmap, every key gets past it
def test_the_earlier_search_equals_the_sql_reference(tmp_path, monkeypatch, bits_per_key):
    import random

    from gra_stream import band_index
    from gra_stream.band_index import EarlierIndex

    monkeypatch.setattr(band_index, "BITS_PER_KEY", bits_per_key)
    from gra_stream.minhash import band_keys, signatures

    rng = random.Random(7)
    words = [*BASE.split(), "soil", "water", "seed", "garden", "sun", "rain", "leaf", "root", "bloom", "harvest"]
    texts = [" ".join(rng.choice(words) for _ in range(14)) for _ in range(120)]
    texts += [t.replace(t.split()[3], "compost", 1) for t in texts[:40]]  # near copies
    texts += texts[:10]  # exact copies
    ctx, store = context(tmp_path / "run")
    d = ctx.config.dedup
    ids = [f"g{i:04d}" for i in range(len(texts))]
    for start in range(0, 150, 50):  # three committed segments
        part = batch([{"id": i, "instruction": t, "response": "Water it every morning and evening."}
                      for i, t in zip(ids[start:start + 50], texts[start:start + 50])])
        store.write_segment("gates", f"part{start}", gate.run(part, ctx))
    # passed rows with the very signatures of earlier ones: equal scores, where the smallest id must win
    first = pl.read_parquet(store.segments("gates")[1]).filter(pl.col("passed")).head(8)
    store.write_segment("gates", "twins", pl.concat([first.with_columns((pl.lit("a-") + pl.col("id")).alias("id")),
                                                     first.with_columns((pl.lit("z-") + pl.col("id")).alias("id"))]))
    query = texts[150:] + texts[:20]
    query_ids = [f"q{i:03d}" for i in range(len(query))]
    sigs = signatures(query, num_perm=d.num_perm, k=d.shingle_chars)
    keys = band_keys(sigs, d.bands)
    got = EarlierIndex(store, d.num_perm, d.bands).earlier_matches(query_ids, sigs, keys, d.threshold)
    ctx.con.register("batch_sigs", pl.DataFrame({"id": query_ids, "minhash": list(sigs), "bands": list(keys)},
                                                schema={"id": pl.String, "minhash": pl.List(pl.UInt32),
                                                        "bands": pl.List(pl.UInt64)}).to_arrow())
    want = {i: (o, s) for i, o, s in ctx.con.execute(EARLIER_SQL, {"threshold": d.threshold}).fetchall()}
    assert got == want
    assert len(want) >= 25 and sum(o.startswith("a-") for o, _ in want.values()) >= 4
    # sidecars are derived: deleted, they are rebuilt to the same answer
    import shutil
    shutil.rmtree(store.root / ".index")
    assert EarlierIndex(store, d.num_perm, d.bands).earlier_matches(query_ids, sigs, keys, d.threshold) == want


def test_a_key_bitmap_has_every_key_and_few_others():
    from gra_stream.band_index import BITS_PER_KEY, in_bitmap, key_bitmap
    from gra_stream.minhash import band_keys, signatures

    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(list(BASE.split()), 12)) + f" {i}" for i in range(3000)]
    keys = band_keys(signatures(texts, num_perm=120, k=5), 20).ravel()
    bitmap = key_bitmap(keys)
    assert in_bitmap(bitmap, keys).all()
    # keys of slightly edited texts: most bands differ in one MinHash row, often the last
    absent = band_keys(signatures([t + " other" for t in texts], num_perm=120, k=5), 20).ravel()
    absent = absent[~np.isin(absent, keys)]
    assert len(absent) > 10000 and in_bitmap(bitmap, absent).mean() < 2 / BITS_PER_KEY


def test_segments_committed_after_prepare_are_searched_by_finish(tmp_path):
    """Workers prepare a batch ahead, searching the segments committed by then; `finish` searches those
    committed since. Split anywhere, the matches equal one search of everything (ties included)."""
    ctx, store = context(tmp_path / "run")
    response = "Choose a sunny spot, loosen the soil, plant seedlings deep and water them regularly."
    rows = [{"id": "a", "instruction": BASE, "response": response},
            {"id": "b", "instruction": "Explain how vaccines train the immune system in simple words", "response": response}]
    store.write_segment("gates", "first", gate.run(batch(rows[:1]), ctx))
    later = batch([{"id": "c", "instruction": BASE + " please", "response": response},
                   {"id": "d", "instruction": "Explain how vaccines train the immune system in simple words!",
                    "response": response},
                   {"id": "e", "instruction": "Write a haiku about snow falling on a quiet town", "response": response}])
    prepared = gate.prepare(later, ctx)  # sees only "first"
    store.write_segment("gates", "second", gate.run(batch(rows[1:]), ctx))  # committed in the meantime
    split = gate.finish(prepared, ctx)
    whole = gate.run(later, ctx)
    assert split.drop("minhash", "bands").equals(whole.drop("minhash", "bands"))
    assert dict(zip(split["id"], split["duplicate_of"])) == {"c": "a", "d": "b", "e": None}


@pytest.mark.parametrize("a,b,best", [
    (None, ("x", 0.8), ("x", 0.8)), (("x", 0.8), None, ("x", 0.8)), (None, None, None),
    (("y", 0.9), ("x", 0.8), ("y", 0.9)), (("y", 0.8), ("x", 0.8), ("x", 0.8)), (("x", 0.8), ("y", 0.8), ("x", 0.8)),
])
def test_the_better_of_two_matches_is_the_higher_estimate_then_the_smaller_id(a, b, best):
    assert better_match(a, b) == best


def reference_walk(sigs, keys, earlier, threshold):
    """The walk one row at a time against a band index of the rows passed so far (what the gate did
    before `within_candidates`): each row's best passed row sharing a key, the higher estimate then the
    earlier row, or its earlier batches' match where that is better (`better_match`: the higher
    estimate, then the smaller id)."""
    by_band, passed, out = {}, [], []
    for i in range(len(sigs)):
        rows = sorted({r for key in keys[i].tolist() for r in by_band.get(key, ())})
        match = None
        if rows:
            scores = (sigs[rows] == sigs[i]).mean(axis=1)
            best = int(np.argmax(scores))
            match = (rows[best], float(scores[best]))
        match = better_match(match, earlier.get(i))
        if match and match[1] >= threshold:
            out.append(match)
            continue
        out.append(None)
        passed.append(i)
        for key in keys[i].tolist():
            by_band.setdefault(key, []).append(i)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_within_batch_search_walks_like_a_band_index(seed):
    """Twins (one signature), near copies, chains of near copies and ties, and earlier batches' matches
    at, above and below the batch's own: the vectorised candidates walk to the same decisions and matches."""
    from gra_stream.minhash import band_keys, signatures
    from gra_stream.stages.gate import within_candidates

    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(400):
        roll = rng.random()
        if texts and roll < 0.15:
            texts.append(texts[rng.integers(len(texts))])  # a twin
        elif texts and roll < 0.45:
            words = texts[rng.integers(len(texts))].split()
            words[rng.integers(len(words))] = str(rng.choice(VOCAB))
            texts.append(" ".join(words))  # a near copy
        else:
            texts.append(" ".join(rng.choice(VOCAB, 12)))
    sigs = signatures(texts, num_perm=120, k=5)
    keys = band_keys(sigs, 20)
    # an earlier batch's match depends on the signature alone: twins share theirs
    _, twin_group = np.unique(sigs, axis=0, return_inverse=True)
    twin_group = twin_group.ravel()
    matched = {int(g): (int(rng.integers(1000)), float(rng.choice([0.6, 0.7, 0.75, 1.0])))
               for g in rng.choice(twin_group.max() + 1, 50)}
    earlier = {i: matched[g] for i, g in enumerate(twin_group.tolist()) if g in matched}
    for threshold in (0.5, 0.7, 0.9):
        want = reference_walk(sigs, keys, earlier, threshold)
        candidates = within_candidates(sigs, keys, threshold)
        got, passed = [], set()
        for i in range(len(texts)):
            within = next(((j, -s) for s, j in candidates.get(i, ()) if j in passed), None)
            match = better_match(earlier.get(i), within)
            if match and match[1] >= threshold:
                got.append(match)
            else:
                got.append(None)
                passed.add(i)
        assert got == want
        assert sum(m is not None for m in want) > 50


def near_copies(seed: int, n: int = 300) -> list[str]:
    """Instructions of which most are near copies of an earlier one (one or two words changed)."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for _ in range(n):
        if texts and rng.random() < 0.6:
            words = texts[rng.integers(len(texts))].split()
            for _ in range(rng.integers(1, 3)):
                words[rng.integers(len(words))] = str(rng.choice(VOCAB))
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choice(VOCAB, 12)))
    return texts


def gate_in_batches(run_dir, rows, size: int) -> pl.DataFrame:
    """The gate over `rows` (in id order) in batches of `size`, each committed before the next, with short
    signatures, whose estimates tie often."""
    ctx, store = context(run_dir)
    ctx.config = dataclasses.replace(ctx.config, dedup=dataclasses.replace(ctx.config.dedup, num_perm=32, bands=16,
                                                                          threshold=0.5))
    out = []
    for a in range(0, len(rows), size):
        out.append(gate.run(batch(rows[a:a + size]), ctx))
        store.write_segment("gates", f"b{a:06d}", out[-1])
    return pl.concat(out).select("id", "passed", "reason", "duplicate_of")


@pytest.mark.parametrize("seed", [0, 5])
def test_the_gate_batch_size_changes_no_decision_and_no_match(tmp_path, seed):
    """`[dedup] batch_size` is a performance knob: a near-duplicate whose best matches tie (one in an
    earlier batch, one in its own) names the same one, the smaller id, however the batches are cut."""
    response = "Dig, plant, water and wait for the sun to shine."
    rows = [{"id": f"{i:05d}", "instruction": text, "response": response} for i, text in enumerate(near_copies(seed))]
    whole = gate_in_batches(tmp_path / "whole", rows, len(rows))
    assert 50 < whole.filter(pl.col("reason") == "near_duplicate").height < len(rows) - 50
    for size in (7, 50, 128):
        assert gate_in_batches(tmp_path / f"by{size}", rows, size).equals(whole), f"batches of {size}"
