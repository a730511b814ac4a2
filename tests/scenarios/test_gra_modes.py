"""Rounds, refinement and integrated modes, the diversity filter and prompt overrides (fake backend)."""
import numpy as np
import polars as pl
import pytest

from gra_stream.backends.pool import ModelPool
from gra_stream.embeddings import HashingEmbedder
from gra_stream.errors import UserError
from gra_stream.progress import Progress
from gra_stream.runner import run_pipeline
from gra_stream.stages import Context
from gra_stream.stages import diversity
from gra_stream.store import Store
from tests.conftest import fake_config, frame, head_jsonl, run_fake, corpus
from tests.invariants import check_run

run, q = run_fake, frame


@pytest.fixture(scope="module")
def gsm(tmp_path_factory):
    return head_jsonl(corpus("gsm8k_train"), tmp_path_factory.mktemp("s") / "gsm.jsonl", 120)


def test_later_rounds_draw_on_seeds_and_earlier_samples(gsm, tmp_path):
    run([gsm], tmp_path / "run", rounds=3)
    gens = q(tmp_path / "run", "SELECT round, count(*) AS n FROM generations GROUP BY 1 ORDER BY 1")
    assert gens["round"].to_list() == [1, 2, 3]
    kept_before = lambda r: q(tmp_path / "run", f"SELECT count(*) AS n FROM samples WHERE round < {r}")["n"][0]  # noqa: E731
    assert gens["n"].to_list() == [120, 120 + kept_before(2), 120 + kept_before(3)]
    anchors = q(tmp_path / "run", """SELECT g.round AS task_round, s.round AS anchor_round FROM generations g
                                     JOIN samples s ON s.id = g.anchor_id""")
    assert anchors.height > 0 and (anchors["anchor_round"] < anchors["task_round"]).all()
    orphans = q(tmp_path / "run", """SELECT g.id FROM generations g ANTI JOIN samples s ON s.id = g.anchor_id
                                     ANTI JOIN seeds x ON x.id = g.anchor_id""")
    assert orphans.is_empty(), "every task is anchored on a seed or a kept sample"
    check_run(tmp_path / "run")
    assert not run([gsm], tmp_path / "run", rounds=3).did_work


def test_tasks_per_round_caps_each_round(gsm, tmp_path):
    run([gsm], tmp_path / "run", rounds=2, tasks_per_round=30)
    per_round = q(tmp_path / "run", "SELECT round, count(*) AS n FROM generations GROUP BY 1 ORDER BY 1")
    assert per_round["n"].to_list() == [30, 30]


def test_refinement_rewrites_seed_responses(gsm, tmp_path):
    run([gsm], tmp_path / "run", mode="refinement")
    gens = q(tmp_path / "run", "SELECT g.kind, g.instruction, s.instruction AS seed_instruction, g.response, "
                               "s.response AS seed_response FROM generations g JOIN seeds s ON s.id = g.seed_id")
    assert set(gens["kind"]) == {"refine"} and gens.height == 120
    ok = gens.filter(pl.col("instruction").is_not_null())
    assert (ok["instruction"] == ok["seed_instruction"]).all()
    assert (ok["response"] != ok["seed_response"]).any()
    assert q(tmp_path / "run", "SELECT count(*) AS n FROM samples WHERE kind = 'refine'")["n"][0] > 0
    check_run(tmp_path / "run")


def test_integrated_mode_has_both_kinds(gsm, tmp_path):
    run([gsm], tmp_path / "run", mode="integrated")
    assert set(q(tmp_path / "run", "SELECT DISTINCT kind FROM samples")["kind"]) == {"refine", "synthesis"}


def _ctx(tmp_path, **diversity_overrides):
    store = Store(tmp_path / "run")
    store.init()
    config = fake_config(diversity={"model": "hashing", **diversity_overrides})
    return Context(config, ModelPool(config), store.connect(), store=store), store


def test_diversity_walks_by_score_and_drops_close_copies(tmp_path):
    ctx, store = _ctx(tmp_path, compare_seeds=True)
    seed_text = "Write a short poem about the ocean at night"
    store.write_segment("seed_embeddings", "s", pl.DataFrame({"id": ["seed1"], "embedding": list(HashingEmbedder().embed([seed_text]))}))
    batch = pl.DataFrame({"id": ["a", "b", "c", "d", "e"], "score": [9.5, 9.0, 8.5, 8.2, 8.1],
                          "kind": ["synthesis", "synthesis", "synthesis", "refine", "synthesis"],
                          "seed_id": ["x", "x", "x", "seed1", "x"],
                          "instruction": ["Explain binary search with an example", "Explain binary search with an example!",
                                          "Describe the water cycle for children", seed_text, seed_text]})
    out = diversity.run(batch, ctx)
    result = {r["id"]: (r["kept"], r["duplicate_of"]) for r in out.iter_rows(named=True)}
    assert result == {"a": (True, None), "b": (False, "a"), "c": (True, None),
                      "d": (True, None), "e": (False, "seed1")}, "refined seed d must not be compared with its own seed"
    assert np.allclose(np.linalg.norm(np.array(out["embedding"].to_list()), axis=1), 1.0)


def test_prompt_override_is_used_and_checked(tmp_path, gsm, monkeypatch):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "review.txt").write_text("Judge harshly.\n{{instruction}}\n---\n{{response}}\n")
    config = fake_config(prompts_dir=str(prompts))
    from gra_stream.backends.fake import FakeBackend

    recorder = FakeBackend("fake-a", record=True)
    monkeypatch.setattr(ModelPool, "backend", lambda self, name: recorder)
    run_pipeline([gsm], tmp_path / "run", config, progress=Progress(quiet=True))
    review_prompts = [r.messages[1]["content"] for r in recorder.history if "reasonable" in r.schema["properties"]]
    assert review_prompts and all(p.startswith("Judge harshly.") for p in review_prompts)
    (prompts / "review.txt").write_text("Judge {{sample}}")
    with pytest.raises(UserError, match=r"unknown slot \{\{sample\}\}"):
        fake_config(prompts_dir=str(prompts))
    with pytest.raises(UserError, match="is not a folder"):
        fake_config(prompts_dir=str(tmp_path / "nope"))
