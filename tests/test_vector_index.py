"""The diversity filter's cell index (`index = "ivf"`): exact when every cell is probed, high agreement with
exact search when few are, and its stored parts (centroids, sidecars) reused and rebuilt as they should."""
import os
import shutil
import signal

import numpy as np
import polars as pl
import pytest

from gra_stream import vector_index
from gra_stream.backends.pool import ModelPool
from gra_stream.cell_storage import Sidecar, id_keys
from gra_stream.embeddings import DIM
from gra_stream.errors import Interrupted
from gra_stream.stages import Context, diversity
from gra_stream.store import Store
from gra_stream.vector_index import CellIndex, spherical_kmeans
from tests.conftest import fake_config, frame, run_fake, corpus


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng, n: int, topics: int = 40) -> np.ndarray:
    """Vectors around `topics` directions, like embeddings of a corpus with themes."""
    centres = unit(rng.normal(size=(topics, DIM)))
    return unit(centres[rng.integers(0, topics, n)] + rng.normal(scale=0.06, size=(n, DIM)))


def near_copies(rng, vectors: np.ndarray) -> np.ndarray:
    """A vector at cosine about 0.93 from each of `vectors`."""
    return unit(vectors + rng.normal(scale=0.019, size=vectors.shape))


def write_references(store: Store, table: str, ids: list[str], vectors: np.ndarray, segment_rows: int = 500,
                     prefix: str = "part"):
    for start in range(0, len(ids), segment_rows):
        part = {"id": ids[start:start + segment_rows], "embedding": list(vectors[start:start + segment_rows])}
        if table == "diversity":
            n = len(part["id"])
            part.update(kept=[True] * n, similarity=[None] * n, duplicate_of=[None] * n)
        store.write_segment(table, f"{prefix}-{start:06d}", pl.DataFrame(part))


def exact(queries, ids, vectors, exclude):
    sims = queries @ vectors.T
    for i, own in enumerate(exclude):
        if own is not None:
            sims[i, ids.index(own)] = -1.0
    j = sims.argmax(axis=1)
    return sims[np.arange(len(queries)), j], [ids[k] for k in j]


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "run")
    s.init()
    return s


@pytest.mark.parametrize("block_rows,matrix", [(32768, 1 << 22), (50, 1000)])
def test_probing_every_cell_is_exact_search(store, monkeypatch, block_rows, matrix):
    # small blocks and matrices: crowded cells are split over sidecars and compared in parts
    monkeypatch.setattr(vector_index, "CHUNK_ROWS", block_rows)
    monkeypatch.setattr(vector_index, "SIMILARITIES", matrix)
    rng = np.random.default_rng(1)
    vectors = clustered(rng, 3000)
    ids = [f"s{i:05d}" for i in range(len(vectors))]
    write_references(store, "seed_embeddings", ids, vectors)
    queries = np.concatenate([near_copies(rng, vectors[:50]), clustered(rng, 150)])
    exclude = [ids[0], None, ids[7]] + [None] * (len(queries) - 3)  # a refined seed skips its own seed
    index = CellIndex(store, "hashing", cells=32, probes=32)
    best, best_ids = index.best_matches("seed_embeddings", queries, exclude)
    want, want_ids = exact(queries, ids, vectors, exclude)
    assert np.allclose(best, want, atol=1e-5)
    assert best_ids == want_ids
    assert best_ids[0] != ids[0] and best_ids[1] == ids[1]


def test_few_probes_find_nearly_every_close_pair_at_a_fraction_of_the_work(store):
    rng = np.random.default_rng(2)
    vectors = clustered(rng, 8000, topics=4000)  # spread out: cell borders cut between close pairs
    ids = [f"s{i:05d}" for i in range(len(vectors))]
    write_references(store, "seed_embeddings", ids, vectors)
    queries = near_copies(rng, vectors[rng.choice(len(vectors), 400, replace=False)])
    want, _ = exact(queries, ids, vectors, [None] * len(queries))
    close = want >= 0.9
    assert close.sum() > 350
    best = {}
    for probes in (1, 4):
        best[probes], _ = CellIndex(store, "hashing", cells=64, probes=probes).best_matches(
            "seed_embeddings", queries, [None] * len(queries))
        assert np.all(best[probes] <= want + 1e-5)  # a probe can miss a match, never invent one
    assert np.all(best[4] >= best[1] - 1e-6)  # the 4 nearest cells include the nearest one
    recall = float(((best[4] >= 0.9) & close).sum() / close.sum())
    assert recall >= 0.98, recall


def test_centroids_and_sidecars_are_stored_once_and_reused(store):
    rng = np.random.default_rng(3)
    vectors = clustered(rng, 2000)
    ids = [f"s{i:05d}" for i in range(len(vectors))]
    write_references(store, "seed_embeddings", ids, vectors)
    queries = clustered(rng, 100)
    first = CellIndex(store, "hashing", cells=16, probes=2).best_matches("seed_embeddings", queries, [None] * 100)
    stored = sorted(p.relative_to(store.root) for p in (store.root / ".index").rglob("*") if p.is_file())
    assert len([p for p in stored if p.name.startswith("centroids-")]) == 1
    assert len([p for p in stored if not p.name.startswith("centroids-")]) == 4  # one sidecar per segment
    mtimes = {p: (store.root / p).stat().st_mtime_ns for p in stored}
    again = CellIndex(store, "hashing", cells=16, probes=2).best_matches("seed_embeddings", queries, [None] * 100)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    assert {p: (store.root / p).stat().st_mtime_ns for p in stored} == mtimes  # read, not rewritten
    # derived data: deleted, it is rebuilt to the same answers
    shutil.rmtree(store.root / ".index")
    rebuilt = CellIndex(store, "hashing", cells=16, probes=2).best_matches("seed_embeddings", queries, [None] * 100)
    assert np.array_equal(first[0], rebuilt[0]) and first[1] == rebuilt[1]


# blocks of every cell at once; of a few cells; of one cell, each larger than a block (written a segment at a time)
@pytest.mark.parametrize("block_rows", [32768, 300, 40])
@pytest.mark.parametrize("searched_before", [False, True])
def test_merge_writes_every_row_in_cell_then_segment_then_row_order_and_only_the_merged_file_stays(
        store, monkeypatch, searched_before, block_rows):
    monkeypatch.setattr(vector_index, "CHUNK_ROWS", block_rows)
    rng = np.random.default_rng(5)
    vectors = clustered(rng, 1900)
    ids = [f"s{i:05d}" if i % 7 else f"seed-{i}" for i in range(len(vectors))]  # ids of two widths
    write_references(store, "seed_embeddings", ids, vectors, segment_rows=300)  # 7 segments, the last short
    index = CellIndex(store, "hashing", cells=16, probes=3)
    if searched_before:  # a search made per-segment sidecars: merge replaces them
        index.best_matches("seed_embeddings", clustered(rng, 20), [None] * 20)
        killed = index._merged_path("seed_embeddings", index.reference_segments("seed_embeddings")).parent
        killed.mkdir(parents=True)
        (killed / ".old.123.vectors.tmp").write_bytes(b"left by a merge killed before")
    index.merge("seed_embeddings")
    files = [p for p in (store.root / ".index").rglob("*") if p.is_file() and not p.name.startswith("centroids-")]
    assert [p.parent.name for p in files] == ["merged"]
    cells = CellIndex.nearest_cells(index.centroids("seed_embeddings"), vectors, 1)[:, 0]
    order = np.argsort(cells, kind="stable")  # the segments are in id order: cell, then segment and row order
    merged = Sidecar(files[0])
    assert merged.starts.tolist() == np.searchsorted(cells[order], np.arange(17)).tolist()
    keys, stored = merged.slice(0, len(ids))
    assert np.array_equal(stored, vectors[order])
    assert np.array_equal(keys, id_keys([ids[i] for i in order]))
    assert merged.ids(np.arange(len(ids))) == [ids[i] for i in order]


@pytest.mark.parametrize("chunk_rows", [32768, 40])  # 40: cells of more rows than a block, read in parts
def test_a_merged_sidecar_gives_the_answers_of_the_per_segment_ones_until_a_segment_is_added(store, monkeypatch,
                                                                                             chunk_rows):
    monkeypatch.setattr(vector_index, "CHUNK_ROWS", chunk_rows)
    rng = np.random.default_rng(11)
    vectors = clustered(rng, 2400)
    ids = [f"s{i:05d}" for i in range(len(vectors))]
    write_references(store, "seed_embeddings", ids[:2000], vectors[:2000], segment_rows=300)  # 7 segments
    queries = np.concatenate([near_copies(rng, vectors[:60]), near_copies(rng, vectors[2000:2040]), clustered(rng, 60)])
    exclude = [ids[i] if i % 3 == 0 else None for i in range(60)] + [None] * 100  # skip their own seed

    def search():
        return CellIndex(store, "hashing", cells=16, probes=3).best_matches("seed_embeddings", queries, exclude)

    per_segment = search()
    index = CellIndex(store, "hashing", cells=16, probes=3)
    index.grow("seed_embeddings")  # as the filter's setup does
    index.merge("seed_embeddings")
    sidecars = [p for p in (store.root / ".index").rglob("*.npy") if not p.name.startswith("centroids-")]
    assert [p.parent.name for p in sidecars] == ["merged"]  # one file; the per-segment ones are gone
    stamps = [p.stat().st_mtime_ns for p in sidecars]
    later = CellIndex(store, "hashing", cells=16, probes=3)  # a later run's setup: nothing to write
    later.grow("seed_embeddings")
    later.merge("seed_embeddings")
    assert [p for p in (store.root / ".index").rglob("*.npy") if not p.name.startswith("centroids-")] == sidecars
    assert [p.stat().st_mtime_ns for p in sidecars] == stamps
    cells = np.bincount(CellIndex.nearest_cells(index.centroids("seed_embeddings"), vectors[:2000], 1)[:, 0])
    assert chunk_rows > 2000 or cells.max() > 2 * chunk_rows  # a cell read in several parts
    merged = search()  # (in blocks of other shapes a matrix product may round the last bit otherwise)
    assert [p for p in (store.root / ".index").rglob("*.npy") if not p.name.startswith("centroids-")] == sidecars
    assert np.allclose(per_segment[0], merged[0], rtol=0, atol=1e-6) and per_segment[1] == merged[1]
    found = [i for i in range(60) if i % 3]
    assert merged[0][found].min() > 0.9 and [merged[1][i] for i in found] == [ids[i] for i in found]
    assert all(merged[1][i] != ids[i] for i in range(0, 60, 3))  # their own seed skipped
    # seeds added later: the merged file no longer names the table's segments, so per-segment sidecars
    # are made again and searched, until the next merge, which gives the same answers
    write_references(store, "seed_embeddings", ids[2000:], vectors[2000:], segment_rows=400, prefix="more")
    added = search()
    assert added[0][60:100].min() > 0.9 and added[1][60:100] == ids[2000:2040]
    index = CellIndex(store, "hashing", cells=16, probes=3)
    index.merge("seed_embeddings")
    assert len([p for p in (store.root / ".index").rglob("*.npy") if not p.name.startswith("centroids-")]) == 1
    again = search()
    assert np.allclose(added[0], again[0], rtol=0, atol=1e-6) and added[1] == again[1]


def test_an_empty_reference_table_matches_nothing(store):
    rng = np.random.default_rng(6)
    write_references(store, "seed_embeddings", [f"s{i}" for i in range(100)], clustered(rng, 100))
    best, best_ids = CellIndex(store, "hashing", cells=2, probes=1).best_matches("diversity", clustered(rng, 5), [None] * 5)
    assert best.tolist() == [-1.0] * 5 and best_ids == [None] * 5


def test_a_table_too_small_for_its_cells_is_searched_exactly_until_it_has_grown(store):
    rng = np.random.default_rng(7)
    vectors = clustered(rng, 1200)
    ids = [f"k{i:05d}" for i in range(len(vectors))]
    queries = np.concatenate([near_copies(rng, vectors[:40]), clustered(rng, 60)])
    index = CellIndex(store, "hashing", cells=16, probes=1)  # cells are trained from 16 * 39 = 624 rows
    write_references(store, "diversity", ids[:600], vectors[:600])
    best, best_ids = index.best_matches("diversity", queries, [None] * len(queries))
    want, want_ids = exact(queries, ids[:600], vectors[:600], [None] * len(queries))
    assert np.allclose(best, want, atol=1e-5) and best_ids == want_ids  # exact, however few probes
    assert not list((store.root / ".index").rglob("*.npy"))  # nothing trained, nothing stored
    write_references(store, "diversity", ids[600:], vectors[600:], segment_rows=600, prefix="more")
    best, _ = CellIndex(store, "hashing", cells=16, probes=1).best_matches("diversity", queries, [None] * len(queries))
    assert [p.name for p in (store.root / ".index" / "diversity").glob("centroids-*")] == [
        f"centroids-{index.key}-diversity.npy"]
    want, _ = exact(queries, ids, vectors, [None] * len(queries))
    assert np.all(best <= want + 1e-5) and (best < want - 1e-5).any()  # now cells: one probe misses some


def test_each_table_has_cells_trained_on_its_own_rows(store):
    # kept samples unlike the seeds: in cells trained on the seeds they would crowd into a few
    rng = np.random.default_rng(8)
    seeds = clustered(rng, 2000, topics=40)
    kept = unit(unit(rng.normal(size=(1, DIM))) + 0.5 * clustered(rng, 2000, topics=40))  # alike: one theme
    write_references(store, "seed_embeddings", [f"s{i}" for i in range(2000)], seeds)
    write_references(store, "diversity", [f"k{i}" for i in range(2000)], kept)
    index = CellIndex(store, "hashing", cells=32, probes=2)
    for table in ("seed_embeddings", "diversity"):
        index.best_matches(table, clustered(rng, 10), [None] * 10)
    own, other = index.centroids("diversity"), index.centroids("seed_embeddings")
    assert own.shape == other.shape == (32, DIM)
    crowd = lambda centroids: np.bincount(CellIndex.nearest_cells(centroids, kept, 1)[:, 0], minlength=32).max()
    assert crowd(own) * 2 < crowd(other)  # the kept samples' largest cell is much smaller in their own cells
    assert np.mean((kept @ own.T).max(axis=1)) > np.mean((kept @ other.T).max(axis=1))


def scale_down(monkeypatch, rows_per_cell: int, training_vectors_per_cell: int) -> None:
    """A large table's cell per `rows_per_cell` rows, with at least `training_vectors_per_cell` each."""
    monkeypatch.setattr(vector_index, "ROWS_PER_CELL", rows_per_cell)
    monkeypatch.setattr(vector_index, "MIN_ROWS_PER_GROWN_CELL", training_vectors_per_cell)


def themed_with_near_copies(seed: int, n: int, prefix: str):
    """(vectors, ids, queries): `n` vectors on 60 themes, then queries that are near copies of the first
    100 followed by 100 unrelated ones."""
    rng = np.random.default_rng(seed)
    vectors = clustered(rng, n, topics=60)
    queries = np.concatenate([near_copies(rng, vectors[:100]), clustered(rng, 100, topics=60)])
    return vectors, [f"{prefix}{i:05d}" for i in range(n)], queries


def test_a_large_table_gets_a_cell_per_rows_per_cell_rows_unless_every_cell_is_probed(store, monkeypatch):
    scale_down(monkeypatch, rows_per_cell=100, training_vectors_per_cell=20)
    vectors, ids, queries = themed_with_near_copies(9, 3000, "s")
    write_references(store, "seed_embeddings", ids, vectors)
    grown = CellIndex(store, "hashing", cells=8, probes=2)
    assert grown.centroids("seed_embeddings").shape == (30, DIM)  # 3,000 rows / 100, not the 8 asked for
    best, _ = grown.best_matches("seed_embeddings", queries, [None] * len(queries))
    want, _ = exact(queries, ids, vectors, [None] * len(queries))
    assert np.all(best <= want + 1e-5)
    assert np.allclose(best[:100], want[:100], atol=1e-5) and np.all(best[:100] >= 0.9)  # the near copies are found
    assert CellIndex(Store(store.root.parent / "few"), "hashing", cells=8, probes=2)._cell_count(
        "seed_embeddings", 400) == 8  # no segments in that store: the table is small
    assert grown._cell_count("seed_embeddings", 400) == 20  # 400 training vectors / 20: at most 20 grown cells
    assert CellIndex(store, "hashing", cells=8, probes=8)._cell_count("seed_embeddings", 3000) == 8  # exact asked


def test_a_table_that_grows_is_trained_again_with_more_cells_and_its_old_sidecars_go(store, monkeypatch):
    scale_down(monkeypatch, rows_per_cell=50, training_vectors_per_cell=10)
    vectors, ids, queries = themed_with_near_copies(10, 1400, "k")
    folder = store.root / ".index" / "diversity"
    write_references(store, "diversity", ids[:400], vectors[:400])
    index = CellIndex(store, "hashing", cells=8, probes=2)
    index.grow("diversity")  # trains the first cells: 400 rows / 50 = 8, as asked
    assert index.centroids("diversity").shape == (8, DIM)
    index.best_matches("diversity", queries, [None] * len(queries))
    first_sidecars = sorted((folder / index.key / "diversity").glob("*.npy"))
    assert len(first_sidecars) == 1
    write_references(store, "diversity", ids[400:700], vectors[400:700], segment_rows=300, prefix="b")
    index.grow("diversity")  # 700 rows ask for 14 cells: fewer than twice 8, no retraining
    assert index.centroids("diversity").shape == (8, DIM) and not list(folder.glob("centroids-*.1.npy"))
    write_references(store, "diversity", ids[700:], vectors[700:], segment_rows=700, prefix="c")
    index.grow("diversity")  # 1,400 rows: 28 cells
    assert index.centroids("diversity").shape == (28, DIM)
    assert sorted(p.name for p in folder.glob("centroids-*")) == [f"centroids-{index.key}-diversity.1.npy",
                                                                 f"centroids-{index.key}-diversity.npy"]
    best, best_ids = index.best_matches("diversity", queries, [None] * len(queries))
    assert not (folder / index.key / "diversity").exists()  # the sidecars of the 8 cells are gone
    assert len(list((folder / index.key / "diversity.1").glob("*.npy"))) == 3
    want, want_ids = exact(queries, ids, vectors, [None] * len(queries))
    assert np.all(best <= want + 1e-5)
    assert np.allclose(best[:100], want[:100], atol=1e-5) and best_ids[:100] == want_ids[:100]
    # a worker's index (no growing) reads the latest cells, and answers alike
    again = CellIndex(store, "hashing", cells=8, probes=2)
    assert np.array_equal(again.centroids("diversity"), index.centroids("diversity"))
    assert again.best_matches("diversity", queries, [None] * len(queries))[1] == best_ids
    # all its rows fit in the training set, so cells trained from scratch on the grown table are the same
    monkeypatch.setattr(vector_index, "MIN_ROWS_PER_CELL", 1)
    shutil.rmtree(store.root / ".index")
    assert np.array_equal(CellIndex(store, "hashing", cells=8, probes=2).centroids("diversity"), again.centroids("diversity"))


def test_few_training_vectors_give_fewer_cells():
    rng = np.random.default_rng(4)
    vectors = clustered(rng, 60, topics=3)
    centroids = spherical_kmeans(vectors, 3)
    assert centroids.shape == (3, DIM) and np.allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)


class Planted:
    """An embedder that returns the test's vectors, row for row."""

    def __init__(self, vectors):
        self.vectors = vectors

    def embed(self, texts):
        assert len(texts) == len(self.vectors)
        return self.vectors


def test_the_diversity_stage_with_every_cell_probed_decides_as_exact_search(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    seeds = clustered(rng, 1500)
    seed_ids = [f"seed{i:05d}" for i in range(len(seeds))]
    kept = clustered(rng, 700)
    kept_ids = [f"kept{i:05d}" for i in range(len(kept))]
    batch_vectors = np.concatenate([near_copies(rng, seeds[:30]), near_copies(rng, kept[:30]), clustered(rng, 200)])
    batch = pl.DataFrame({"id": [f"b{i:04d}" for i in range(len(batch_vectors))],
                          "score": np.linspace(9.9, 6.0, len(batch_vectors)),
                          "kind": ["refine"] + ["synthesis"] * (len(batch_vectors) - 1),
                          "seed_id": [seed_ids[0]] + ["x"] * (len(batch_vectors) - 1),
                          "instruction": ["?"] * len(batch_vectors)})
    monkeypatch.setattr(diversity, "get_embedder", lambda model: Planted(batch_vectors))
    outcomes = {}
    for index in ("exact", "ivf"):
        store = Store(tmp_path / index)
        store.init()
        write_references(store, "seed_embeddings", seed_ids, seeds)
        write_references(store, "diversity", kept_ids, kept)
        config = fake_config(diversity={"model": "hashing", "index": index, "cells": 8, "probes": 8})
        ctx = Context(config, ModelPool(config), store.connect(), store=store)
        outcomes[index] = diversity.run(batch, ctx).select("id", "kept", "duplicate_of", "similarity")
    assert outcomes["ivf"]["kept"].to_list() == outcomes["exact"]["kept"].to_list()
    assert outcomes["ivf"]["duplicate_of"].to_list() == outcomes["exact"]["duplicate_of"].to_list()
    assert np.allclose(outcomes["ivf"]["similarity"].to_numpy(), outcomes["exact"]["similarity"].to_numpy(), atol=1e-5)
    dropped = outcomes["exact"].filter(~pl.col("kept"))
    assert dropped.height >= 55  # the planted copies of seeds and of kept samples (row 0 is its own seed's refinement)


def walk_with_the_whole_matrix(vectors: np.ndarray, threshold: float) -> list[tuple[bool, int, float]]:
    """The within-batch walk as it was before it read only the later rows: one n x n similarity matrix, each
    kept row raising the running best of every row. (kept, row of the best kept earlier match or -1, its
    similarity)."""
    within = vectors @ vectors.T
    best = np.full(len(vectors), -np.inf, dtype=np.float32)
    best_row = np.full(len(vectors), -1)
    out = []
    for i in range(len(vectors)):
        keep = not best[i] >= threshold
        out.append((keep, int(best_row[i]), float(best[i])))
        if keep:
            raised = within[i] > best
            best[raised], best_row[raised] = within[i][raised], i
    return out


@pytest.mark.parametrize("block", [512, 7, 1])
def test_the_walk_over_later_similarities_equals_the_walk_over_the_whole_matrix(tmp_path, monkeypatch, block):
    """The walk reads only the similarities of each row to the rows after it, computed in blocks; an exact
    tie goes to the first kept row."""
    monkeypatch.setattr(diversity, "WITHIN_BLOCK", block)
    rng = np.random.default_rng(11)
    base = clustered(rng, 150, topics=6)
    vectors = np.concatenate([base, near_copies(rng, base[:60]), base[:20]])[rng.permutation(230)]
    vectors = vectors.round(2).astype(np.float32)  # coarse values: more exact ties
    # and one planted exactly: rows 0 and 1 (kept: cosine 0.805 to each other) are both at 0.95 from row 2
    tie = np.zeros((3, DIM), dtype=np.float32)
    tie[0, :2], tie[1, :2], tie[2, 0] = (0.95, 0.3125), (0.95, -0.3125), 1.0
    vectors = np.concatenate([tie, vectors])
    batch = pl.DataFrame({"id": [f"b{i:04d}" for i in range(len(vectors))], "score": np.linspace(9.9, 6.0, len(vectors)),
                          "kind": ["synthesis"] * len(vectors), "seed_id": ["x"] * len(vectors),
                          "instruction": ["?"] * len(vectors)})
    monkeypatch.setattr(diversity, "get_embedder", lambda model: Planted(vectors))
    store = Store(tmp_path / "run")
    store.init()
    config = fake_config(diversity={"model": "hashing", "compare_seeds": False, "threshold": 0.9})
    out = diversity.run(batch, Context(config, ModelPool(config), store.connect(), store=store))
    want = walk_with_the_whole_matrix(vectors, 0.9)
    assert out["kept"].to_list() == [keep for keep, _, _ in want]
    assert out["duplicate_of"].to_list() == [None if keep else f"b{row:04d}" for keep, row, _ in want]
    assert np.allclose(out["similarity"].to_numpy()[1:], [score for _, _, score in want[1:]], atol=1e-6)
    assert want[2][:2] == (False, 0) and 40 <= out.filter(~pl.col("kept")).height <= 150


def test_a_run_stopped_while_the_kept_samples_grow_resumes_to_the_same_decisions(tmp_path, monkeypatch, small_cells):
    # (small_cells: the kept samples' cells are trained, then trained again twice, within one run)
    seeds = [corpus("self_instruct_seed_tasks")]
    options = {"diversity": {"model": "hashing", "index": "ivf", "cells": 2, "probes": 1, "walk_batch": 8}}
    run_fake(seeds, tmp_path / "whole", **options)

    finish, calls = diversity.finish, []

    def stop_after_three(batch, ctx):
        calls.append(batch.height)
        if len(calls) == 3:  # as Ctrl-C would: the batch in flight is committed, then the run stops
            os.kill(os.getpid(), signal.SIGTERM)
        return finish(batch, ctx)

    monkeypatch.setattr(diversity, "finish", stop_after_three)
    with pytest.raises(Interrupted):
        run_fake(seeds, tmp_path / "stopped", **options)
    monkeypatch.setattr(diversity, "finish", finish)
    run_fake(seeds, tmp_path / "stopped", **options)

    query = "SELECT id, kept, similarity, duplicate_of FROM diversity ORDER BY id"
    whole, resumed = frame(tmp_path / "whole", query), frame(tmp_path / "stopped", query)
    assert whole.height > 40 and whole.equals(resumed)
    for run in ("whole", "stopped"):
        trained = sorted(p.name for p in (tmp_path / run / ".index" / "diversity").glob("centroids-*-diversity*"))
        assert len(trained) >= 3, trained  # the first cells and at least two retrainings


def test_the_walk_is_cut_by_walk_batch_not_by_cpu_batch_size(tmp_path, small_cells):
    """Within a batch of the walk every pair is compared exactly, across batches through the cells: so
    `diversity.walk_batch` is part of the results (a key of the stage's version), and `cpu_batch_size`,
    a performance knob, is not."""
    seeds = [corpus("self_instruct_seed_tasks")]
    query = "SELECT id, kept, similarity, duplicate_of FROM diversity ORDER BY id"

    def walk(name, cpu_batch_size, walk_batch):
        run_fake(seeds, tmp_path / name, cpu_batch_size=cpu_batch_size, diversity={
            "model": "hashing", "threshold": 0.5, "index": "ivf", "cells": 2, "probes": 1, "walk_batch": walk_batch})
        return frame(tmp_path / name, query)

    eights = walk("eights", 8, 8)
    assert eights.height > 40 and eights.filter(~pl.col("kept")).height > 5
    assert walk("cpu-13", 13, 8).equals(eights)
    assert not walk("walk-13", 8, 13).equals(eights)


def test_saved_arrays_map_back_equal_whatever_their_memory_order(tmp_path):
    """Memory maps and the sidecars' offset reads take the data as C order: a transposed (Fortran-ordered)
    array is stored in C order, not as np.save would keep it."""
    from gra_stream.store import map_arrays, save_arrays

    transposed = np.arange(12, dtype=np.int64).reshape(3, 4).T
    plain = np.arange(5, dtype=np.float32)
    save_arrays(tmp_path / "a.npy", [transposed, plain])
    mapped = map_arrays(tmp_path / "a.npy")
    assert [m.tolist() for m in mapped] == [transposed.tolist(), plain.tolist()]
