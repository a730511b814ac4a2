"""The runner's own decisions: what it checks before touching the run directory, what it records of each
run, when it may skip every pending query, the columns it checks before any model loads, and the memory
its pending queries drain under."""
import json

import pytest

from gra_stream import pending, run_log, runner, stage_versions
from gra_stream.errors import UserError
from gra_stream.run_log import tables_config
from gra_stream.progress import Progress
from gra_stream.stages import Stage, all_stages
from gra_stream.store import Store
from tests.conftest import corpus, fake_config, head_jsonl, run_fake
from tests.invariants import state


def test_inputs_are_checked_before_the_run_directory_exists(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        runner.run_pipeline([tmp_path / "missing.jsonl"], tmp_path / "run", fake_config(), progress=Progress(quiet=True))
    bad_filter = fake_config(filters={"enabled": ["no_such_filter"]})
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 5)
    with pytest.raises(UserError):
        runner.run_pipeline([seeds], tmp_path / "run", bad_filter, progress=Progress(quiet=True))
    assert not (tmp_path / "run").exists()
    folder = tmp_path / "shards"
    folder.mkdir()
    head_jsonl(corpus("gsm8k_train"), folder / "b.jsonl", 3)
    head_jsonl(corpus("gsm8k_train"), folder / "a.jsonl", 3)
    assert runner.check_inputs([folder], fake_config()) == [folder / "a.jsonl", folder / "b.jsonl"]


def test_a_glob_pattern_names_its_seed_files_in_order(tmp_path):
    (tmp_path / "shards" / "deep").mkdir(parents=True)
    for name in ("shards/b.jsonl", "shards/a.jsonl", "shards/deep/c.jsonl", "shards/notes.md"):
        head_jsonl(corpus("gsm8k_train"), tmp_path / name, 2) if name.endswith("l") else (tmp_path / name).write_text("x")
    config = fake_config()
    assert runner.check_inputs([tmp_path / "shards" / "*.jsonl"], config) == [tmp_path / "shards" / n for n in ("a.jsonl", "b.jsonl")]
    assert runner.check_inputs([tmp_path / "shards" / "**" / "*"], config) == [
        tmp_path / "shards" / n for n in ("a.jsonl", "b.jsonl", "deep/c.jsonl")]
    with pytest.raises(UserError, match=r"no seed file matches .*\*\.csv"):
        runner.check_inputs([tmp_path / "shards" / "*.csv"], config)


def test_a_finished_run_is_recognised_until_anything_changes(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 20)
    config, run_dir = fake_config(), tmp_path / "run"
    assert tables_config(Store(run_dir)) == (None, {})
    runner.run_pipeline([seeds], run_dir, config, progress=Progress(quiet=True))
    store, names = Store(run_dir), [s.name for s in all_stages()]
    assert run_log.nothing_changed(store, config, names)
    assert not run_log.nothing_changed(store, fake_config(batch_size=7), names), "another config: query again"
    assert not run_log.nothing_changed(store, config, names[:-1])
    store.remove_segments("samples", "finalize-")
    assert not run_log.nothing_changed(store, config, names), "a lost segment: query again"
    recorded, recorded_config = tables_config(store)
    assert recorded["versions"] == stage_versions.versions(config) and recorded_config == config.to_json()
    runs = store.connect().sql("SELECT outcome, versions FROM runs").fetchall()
    assert [o for o, _ in runs].count("finished") == 1 and all(json.loads(v) == recorded for _, v in runs)


def test_a_stage_whose_pending_rows_lack_its_declared_columns_fails_before_any_model(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 3)
    broken = Stage("broken", "verdicts", ("id", "no_such_column"), lambda config, scope=None: "SELECT id FROM seeds",
                   lambda batch, ctx: batch)
    with pytest.raises(RuntimeError, match=r"stage broken: pending rows lack declared input columns \['no_such_column'\]"):
        runner.run_pipeline([seeds], tmp_path / "run", fake_config(), progress=Progress(quiet=True),
                            stages=[*all_stages(), broken])
    assert Store(tmp_path / "run").connect().sql("SELECT count(*) FROM profiles").fetchall() == [(0,)]


def test_auto_runs_batches_in_worker_processes_unless_a_model_runs_in_process(monkeypatch):
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    assert runner.choose_executor("auto", fake_config()) == "processes"
    engine = fake_config(models=[{"name": "smollm2", "backend": "vllm", "path": "embedded:smollm2"}])
    assert runner.choose_executor("auto", engine) == "local"
    assert runner.choose_executor("ray", engine) == "ray" and runner.choose_executor("local", fake_config()) == "local"
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 1)
    assert runner.choose_executor("auto", fake_config()) == "local"


def test_a_pending_query_that_outgrows_the_first_drain_limit_is_drained_under_the_next(tmp_path, monkeypatch):
    """What a pending query needs grows with the wave: one that runs out of DuckDB memory under the first
    drain limit is drained again under the next, and the run ends with the tables of a run that never ran out."""
    from gra_stream.memory import DUCKDB_MEMORY

    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "seeds.jsonl", 100)
    run_fake([seeds], tmp_path / "roomy")
    tried = []
    drain_under = pending.drain_under
    monkeypatch.setattr(pending, "drain_under", lambda limit, *args: tried.append(limit) or drain_under(limit, *args))
    monkeypatch.setattr(pending, "DRAIN_MEMORY", ("8MB", DUCKDB_MEMORY))  # a 100-seed run's drains outgrow 8MB
    run_fake([seeds], tmp_path / "tight")
    assert "8MB" in tried and DUCKDB_MEMORY in tried
    assert state(tmp_path / "tight") == state(tmp_path / "roomy")


@pytest.mark.parametrize("rounds", [1, 2])
def test_stages_with_nothing_to_do_skip_their_pending_query_in_every_wave(tmp_path, monkeypatch, rounds):
    """After a tau change the stages before review have nothing pending: their passes do not drain their
    pending query once per wave. With one round generation is then done, so the passes go stage by stage,
    and review, decide and the diversity walk (ordered: wave by wave within its one pass) drain their
    pending query once for every wave. With two rounds generation reads what later stages make, so it and
    the stages after it are drained in every wave of every round. The tables are those of a fresh run."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "seeds.jsonl", 40)
    settings = {"waves": {"first_seeds": 2}, "rounds": rounds}
    run_fake([seeds], tmp_path / "run", **settings)
    drained = []
    drain = runner.drain
    monkeypatch.setattr(runner, "drain", lambda con, query, path: drained.append(path.name.split("-")[1])
                        or drain(con, query, path))
    run_fake([seeds], tmp_path / "run", committee={"tau": 6.0}, **settings)
    waves = len(runner.waves.plan(Store(tmp_path / "run").connect(), 2))
    assert waves > 2
    assert not {"profile", "embed"} & set(drained)
    assert drained.count("generate") == (0 if rounds == 1 else rounds * waves)
    assert drained.count("review") == drained.count("decide") == drained.count("diversity") == (
        1 if rounds == 1 else rounds * waves)
    monkeypatch.undo()
    run_fake([seeds], tmp_path / "fresh", committee={"tau": 6.0}, **settings)
    assert state(tmp_path / "run") == state(tmp_path / "fresh")


def test_a_re_run_s_one_diversity_pass_walks_in_the_batches_of_a_fresh_run_s_passes(tmp_path, monkeypatch):
    """After a tau change generation is done, and the diversity walk takes every wave in one pass; its
    batches still end where a wave does, so they are the batches a fresh run walks wave by wave: the search
    across batches is approximate (the cell index), so the cuts decide what is compared exactly."""
    from gra_stream.stages import diversity

    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "seeds.jsonl", 40)
    settings = {"waves": {"first_seeds": 2}, "diversity": {"model": "hashing", "walk_batch": 4}}
    run_fake([seeds], tmp_path / "run", **settings)
    walked = {"run": [], "fresh": []}
    for name in walked:
        finish = diversity.finish
        monkeypatch.setattr(diversity, "finish",
                            lambda batch, ctx, out=walked[name]: out.append(batch["id"].to_list()) or finish(batch, ctx))
        run_fake([seeds], tmp_path / name, committee={"tau": 6.0}, **settings)
        monkeypatch.undo()
    assert len(walked["run"]) > len(runner.waves.plan(Store(tmp_path / "run").connect(), 2)) > 2
    assert any(len(batch) < 4 for batch in walked["run"][:-1]), "a wave ends inside a batch of 4"
    assert walked["run"] == walked["fresh"]
    assert state(tmp_path / "run") == state(tmp_path / "fresh")
