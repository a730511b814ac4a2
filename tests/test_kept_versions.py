"""The tables of earlier configs: kept under DIR/versions/vN, queryable as vN.<table>, listed by `status`
and `sql`, brought back when their config comes back, removed only by `prune`."""
import polars as pl
import pytest
from click.testing import CliRunner

from gra_stream import kept_versions
from gra_stream.cli import main
from gra_stream.status import collect_status
from gra_stream.store import Store, write_parquet
from tests.conftest import corpus, frame, head_jsonl, run_fake
from tests.invariants import KEYED_TABLES


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_kept_tables_are_queryable_listed_and_pruned_only_on_request(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 30)
    run_dir = tmp_path / "run"
    run_fake([seeds], run_dir)
    samples = Store(run_dir).connect().sql("SELECT id FROM samples ORDER BY id").fetchall()
    run_fake([seeds], run_dir, committee={"tau": 6.5})
    run_fake([seeds], run_dir, committee={"tau": 7.5})
    store = Store(run_dir)
    assert [k.label for k in store.kept()] == ["v1", "v2"]
    assert store.connect().sql("SELECT id FROM v1.samples ORDER BY id").fetchall() == samples

    status = collect_status(store)
    assert [k["differs"] for k in status["kept_versions"]] == [["committee.tau 8.0, now 7.5"],
                                                               ["committee.tau 6.5, now 7.5"]]
    assert status["kept_versions"][0]["tables"]["samples"] == len(samples)
    listing = cli("sql", run_dir).output
    assert "v1.samples" in listing and "v2.reviews" in listing

    result = cli("prune", run_dir, "--version", "v2")
    assert result.exit_code == 0 and result.output.startswith("removed v2 (")
    assert [k.label for k in store.kept()] == ["v1"]
    assert cli("prune", run_dir, "--version", "v7").exit_code == 1
    result = cli("prune", run_dir)
    assert result.exit_code == 0 and "removed v1" in result.output and not store.kept()
    assert cli("prune", run_dir).output.startswith("nothing to remove")
    assert store.connect().sql("SELECT count(*) FROM samples").fetchall()[0][0] > 0, "the current tables stay"


def test_a_config_that_comes_back_gets_its_tables_back_and_keeps_the_other(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 30)
    run_dir = tmp_path / "run"
    run_fake([seeds], run_dir)
    store = Store(run_dir)
    before = {t: sorted(p.name for p in store.segments(t)) for t in ("reviews", "verdicts", "samples")}
    run_fake([seeds], run_dir, committee={"tau": 6.5})
    summary = run_fake([seeds], run_dir)
    assert {t: sorted(p.name for p in store.segments(t)) for t in before} == before, "the same segments, moved back"
    assert summary.rows_by_stage.get("review", 0) == 0 and summary.llm_calls == 0
    assert [(k.label, k.config["committee"]["tau"]) for k in store.kept()] == [("v2", 6.5)]
    assert not (run_dir / "versions" / ".switch.json").exists()


def test_a_run_of_some_stages_keeps_aside_only_their_tables(tmp_path):
    """run_pipeline(stages=[...]) after a config change moves the tables of the stages it drives and leaves
    the others, stale or not, where they are."""
    from gra_stream.progress import Progress
    from gra_stream.runner import run_pipeline
    from gra_stream.stages import annotate, diversity, finalize
    from tests.conftest import fake_config

    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 24)
    run_fake([seeds], tmp_path / "run")
    generations = Store(tmp_path / "run").connect().sql("SELECT count(*) FROM generations").fetchall()
    run_pipeline([seeds], tmp_path / "run", fake_config(run_seed=3), progress=Progress(quiet=True),
                 stages=[diversity.STAGE, annotate.STAGE, finalize.STAGE])
    con = Store(tmp_path / "run").connect()
    assert sorted(p.name for p in (tmp_path / "run" / "versions" / "v1").iterdir() if p.is_dir()) == \
        ["annotations", "diversity", "samples"]
    assert con.sql("SELECT count(*) FROM generations").fetchall() == generations
    assert con.sql("SELECT count(*) FROM samples").fetchall() == con.sql("SELECT count(*) FROM v1.samples").fetchall()


def test_a_moved_table_takes_its_cells_with_it_and_leaves_the_seeds_cells(tmp_path):
    """The diversity filter's cells of the kept samples are stale once the diversity table moves aside; the
    seeds' cells, in the same folder, are not (training them again costs a minute at a million seeds)."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 20)
    run_dir = tmp_path / "run"
    run_fake([seeds], run_dir)
    root = run_dir / ".index" / "diversity"
    (root / "k0" / "diversity.1").mkdir(parents=True)
    (root / "k0" / "seed_embeddings" / "merged").mkdir(parents=True)
    for name in ("centroids-k0-diversity.npy", "centroids-k0-diversity.1.npy", "centroids-k0-seed_embeddings.npy",
                 "k0/diversity.1/a.npy", "k0/seed_embeddings/merged/b.npy"):
        (root / name).write_bytes(b"")
    run_fake([seeds], run_dir, diversity={"model": "hashing", "threshold": 0.8})
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if "k0" in str(p))
    assert left == ["centroids-k0-seed_embeddings.npy", "k0", "k0/seed_embeddings", "k0/seed_embeddings/merged",
                    "k0/seed_embeddings/merged/b.npy"]


def test_rows_carried_from_a_kept_table_keep_each_input_rows_rows_in_one_segment():
    """A review stage's pending query skips a generation once one of its rows is in `reviews`: a carry
    cut between a generation's rows, then killed, would leave the rest out for good."""
    from gra_stream.carry import _whole

    keys = list("aaabbbbcdddddde")
    frames = [pl.DataFrame({"generation_id": keys[i:i + 4], "row": range(i, min(i + 4, len(keys)))})
              for i in range(0, len(keys), 4)]
    cut = list(_whole(frames, "generation_id"))
    assert pl.concat(cut)["row"].to_list() == list(range(len(keys))), "every row, in order"
    assert all(set(a["generation_id"]).isdisjoint(b["generation_id"]) for a, b in zip(cut, cut[1:]))
    assert [f.height for f in cut] == [3, 4, 1, 6, 1]


def test_a_batch_reads_back_the_vectors_a_kept_version_has_wherever_its_segments_hold_them(tmp_path):
    """`diversity._kept_vectors`: the vectors of exactly the batch's ids that the kept table has, from
    whichever of its segments hold them; none for a row without a vector or an id it lacks."""
    from gra_stream.executors import open_context
    from gra_stream.stages import diversity
    from tests.conftest import fake_config

    store = Store(tmp_path)
    store.init()
    folder = store.kept_dir("v1") / "diversity"
    folder.mkdir(parents=True)
    (folder.parent / "version.json").write_text('{"versions": {}, "config": {}, "kept_at": ""}')
    for name, ids in (("s1", ["a0", "a1"]), ("s2", ["b0", "b1", "b2"]), ("s3", ["c0"])):
        vectors = [None if i == "b1" else [float(ord(i[0])), float(i[1])] for i in ids]
        pl.DataFrame({"id": ids, "kept": [True] * len(ids), "embedding": vectors},
                     schema={"id": pl.String, "kept": pl.Boolean, "embedding": pl.List(pl.Float32)}
                     ).write_parquet(folder / f"{name}.parquet")
    ctx = open_context(store, fake_config())
    try:
        found = diversity._kept_vectors(ctx, "v1", ["b2", "a1", "b1", "zz"]).sort("id")
        assert found.rows() == [("a1", [97.0, 1.0]), ("b2", [98.0, 2.0])]
        assert diversity._kept_vectors(ctx, "v1", ["zz"]).schema == {"id": pl.String, "embedding": pl.List(pl.Float32)}
    finally:
        ctx.pool.close()


def test_tables_kept_twice_under_one_config_hold_each_row_once(tmp_path):
    """rounds 2, then 1, then 2 again (raising rounds switches nothing: round 2 is added to round 1's
    tables) leaves the current tables and the kept version v1 both under the rounds-2 config. Moving the
    current ones into v1 on the next change, and back when that config returns, must not double a row
    that both copies hold under different segment names (carried ones, for one)."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 24)
    run_dir = tmp_path / "run"
    two, waves = dict(rounds=2), {"first_seeds": 2}
    for overrides in (two, {}, two, {**two, "dedup": {"threshold": 0.3}}):
        run_fake([seeds], run_dir, waves=waves, **overrides)
    con = Store(run_dir).connect()
    for table in KEYED_TABLES:
        for label in [k.label for k in Store(run_dir).kept() if (k.path / table).is_dir()]:
            assert not con.sql(f"SELECT id FROM {label}.{table} GROUP BY id HAVING count(*) > 1").fetchall(), \
                f"{label}.{table} holds a row twice"
    run_fake([seeds], run_dir, waves=waves, **two)
    fresh = tmp_path / "fresh"
    run_fake([seeds], fresh, waves=waves, **two)
    for table in KEYED_TABLES:
        query = f"SELECT * FROM {table} ORDER BY id"
        assert frame(run_dir, query).equals(frame(fresh, query)), f"{table} as a fresh run under rounds 2 makes it"


def test_moving_segments_into_a_folder_that_holds_some_of_their_rows_drops_those_and_only_those(tmp_path, monkeypatch):
    store = Store(tmp_path / "run")
    store.init()
    source, target = store.table_dir("verdicts"), tmp_path / "kept" / "verdicts"
    rows = frame(tmp_path / "run", "SELECT * FROM verdicts").clear(10).with_columns(
        pl.Series("id", [f"id{i}" for i in range(10)]), pl.lit("accept").alias("decision"))
    store.write_segment("verdicts", "a", rows[0:3])    # held in the target: goes
    store.write_segment("verdicts", "b", rows[3:6])    # partly held: written without id3
    store.write_segment("verdicts", "c", rows[6:10])   # new: renamed
    target.mkdir(parents=True)
    write_parquet(target / "old.parquet", rows[0:4].to_arrow())
    real_unlink = type(source).unlink

    def killed(path, *args, **kwargs):  # a kill once "b" is written without id3, before its source goes
        if path.name == "b.parquet":
            raise KeyboardInterrupt("killed")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(type(source), "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        kept_versions._move_segments(source, target)
    monkeypatch.setattr(type(source), "unlink", real_unlink)
    kept_versions._move_segments(source, target)       # the next run moves the rest, doubling nothing
    moved = pl.read_parquet(target / "*.parquet")
    assert sorted(moved["id"]) == [f"id{i}" for i in range(10)], "every row once"
    assert sorted(p.name for p in target.glob("*.parquet")) == ["b.parquet", "c.parquet", "old.parquet"]
    assert pl.read_parquet(target / "b.parquet")["id"].to_list() == ["id4", "id5"]
    assert not [p for p in source.glob("*.parquet") if p.name != "_empty.parquet"]
