"""End to end on the embedded model (SmolLM2-135M-Instruct) with a real in-process vLLM engine.

A 135M model's verdicts are close to random: these tests check shapes and consistency, not quality.
"""
import json
import re

import pytest

from tests.conftest import SAMPLE, gra, head_jsonl, sql_rows, write_toml
from tests.invariants import check_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real")
    seeds = [head_jsonl(SAMPLE / name, tmp / name, 2) for name in ("gsm8k.jsonl", "code_alpaca.jsonl", "self_instruct.jsonl")]
    run_dir = tmp / "run"
    result = gra("run", *seeds, "--run-dir", run_dir, "--config", "configs/default.toml", timeout=1800)
    return run_dir, seeds, result


def test_real_run_fills_every_table_consistently(real_run):
    run_dir, _, _ = real_run
    counts = check_run(run_dir, reviewers=3)
    assert counts["seeds"] == 6
    assert counts["profiles"] == 6 and counts["generations"] >= 1
    profiles = sql_rows(run_dir, "SELECT domain, keywords, summary, model, status FROM profiles WHERE status = 'ok'")
    assert profiles, "no profile parsed"
    for p in profiles:
        assert p["domain"] in {"coding", "math", "question answering", "reasoning", "role-play", "language", "creative writing"}
        assert len(p["keywords"]) == 3 and p["summary"] and p["model"] == "smollm2"


def test_real_reviews_are_well_formed_and_verdicts_follow_them(real_run):
    run_dir, _, _ = real_run
    reviews = sql_rows(run_dir, "SELECT * FROM reviews WHERE status = 'ok'")
    for r in reviews:
        scores = [r[d] for d in ("correctness", "clarity", "completeness", "relevance", "coherence", "ethics")]
        assert all(0 <= s <= 10 for s in scores) and r["mean"] == pytest.approx(sum(scores) / 6)
        assert isinstance(r["reasonable"], bool) and r["prompt_tokens"] > 0 and r["completion_tokens"] > 0
    verdicts = sql_rows(run_dir, "SELECT * FROM verdicts")
    assert {v["decision"] for v in verdicts} <= {"accept", "reject", "adjudicate"}
    assert len(verdicts) == len(sql_rows(run_dir, "SELECT DISTINCT generation_id FROM reviews"))


def test_real_calls_are_accounted(real_run):
    run_dir, _, _ = real_run
    status = json.loads(gra("status", run_dir, "--json").stdout)
    roles = {c["role"]: c for c in status["calls"]}
    assert {"profile", "generator"} <= set(roles)
    assert roles["profile"]["calls"] == 6 and roles["profile"]["completion_tokens"] > 0
    assert roles["profile"]["tokens_per_s"] > 0


def test_the_engine_replies_in_compact_json(real_run):
    """No whitespace between JSON tokens (the engine-wide xgrammar setting): a small model otherwise pads
    replies with newlines until max_tokens cuts them."""
    run_dir, _, _ = real_run
    replies = sql_rows(run_dir, "SELECT text FROM call_cache WHERE finish_reason = 'stop'")
    assert len(replies) >= 12  # 6 profiles, at least 6 generations, reviews
    for r in replies:
        assert json.loads(r["text"]) is not None
        outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', r["text"])
        assert not re.search(r"\s", outside_strings), r["text"][:300]


def test_rerun_with_the_real_model_does_no_work(real_run):
    run_dir, seeds, _ = real_run
    result = gra("run", *seeds, "--run-dir", run_dir, "--config", "configs/default.toml")
    assert "nothing to do" in result.stderr


def test_refinement_round_with_the_real_model(tmp_path):
    seeds = head_jsonl(SAMPLE / "gsm8k.jsonl", tmp_path / "gsm.jsonl", 3)
    config = tmp_path / "refine.toml"
    config.write_text('mode = "refinement"\n')
    gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, timeout=1800)
    gens = sql_rows(tmp_path / "run", "SELECT g.kind, g.instruction, s.instruction AS seed_instruction, g.status "
                                      "FROM generations g JOIN seeds s ON s.id = g.seed_id")
    assert len(gens) == sum(1 for p in sql_rows(tmp_path / "run", "SELECT status FROM profiles") if p["status"] == "ok")
    for g in gens:
        assert g["kind"] == "refine"
        if g["status"] == "ok":
            assert g["instruction"] == g["seed_instruction"]
    check_run(tmp_path / "run", reviewers=3)


def test_a_forced_parse_failure_with_the_real_engine_lands_in_quarantine(tmp_path):
    seeds = head_jsonl(SAMPLE / "code_alpaca.jsonl", tmp_path / "code.jsonl", 2)
    config = tmp_path / "tiny.toml"
    config.write_text('max_reasks = 1\n[[models]]\nname = "smollm2"\nmax_tokens = 6\n')
    gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, timeout=1800)
    rows = sql_rows(tmp_path / "run", "SELECT status, truncated, attempts, error, raw FROM profiles")
    assert len(rows) == 2
    for r in rows:
        assert r["status"] == "quarantined" and r["truncated"] and r["attempts"] == 2
        assert "reply cut at max_tokens (6)" in r["error"] and r["raw"]
    quarantine = sql_rows(tmp_path / "run", "SELECT stage, error FROM quarantine")
    assert [q["stage"] for q in quarantine] == ["profile", "profile"]
    status = json.loads(gra("status", tmp_path / "run", "--json").stdout)
    assert status["calls"][0]["truncated"] == 2 and status["funnel"]["quarantined"] == 2


def test_the_embedded_model_on_a_ray_cluster_matches_the_local_run(real_run, ray_cluster, tmp_path):
    """The same seeds through a Ray actor holding the vLLM engine: same seeds, same profiled ids, the same
    model in the same roles, a consistent run. (Replies are not compared: sampling is seeded per request,
    but vLLM does not promise bit-equal logits across processes.)"""
    local_dir, seeds, _ = real_run
    config = write_toml(tmp_path / "ray.toml", "[ray]\nworkers = 1\ncpus_per_worker = 2.0\n")
    result = gra("run", *seeds, "--run-dir", tmp_path / "run", "--config", config, "--executor", "ray",
                 "--ray-address", ray_cluster, timeout=1800)
    assert "1 workers" in result.stderr
    for query in ("SELECT id FROM seeds ORDER BY id", "SELECT id FROM profiles ORDER BY id",
                  "SELECT DISTINCT model, role FROM calls ORDER BY ALL"):
        assert sql_rows(tmp_path / "run", query) == sql_rows(local_dir, query)
    assert sql_rows(tmp_path / "run", "SELECT count(*) > 0 AS dealt FROM generations") == [{"dealt": True}]
    assert sql_rows(tmp_path / "run", "SELECT sum(completion_tokens) > 0 AS real FROM calls") == [{"real": True}]
    check_run(tmp_path / "run", reviewers=3)


def test_a_pool_of_two_engines_works_at_once_and_finishes(tmp_path):
    """Two in-process engines, each core in a process of its own, driven at the same time: with both cores
    in this process the run crashed (a segmentation fault), which is why one engine keeps its core here."""
    seeds = head_jsonl(SAMPLE / "gsm8k.jsonl", tmp_path / "gsm.jsonl", 3)
    config = write_toml(tmp_path / "two.toml", """
[[models]]
name = "smol-a"
path = "embedded:smollm2"
max_tokens = 200
[[models]]
name = "smol-b"
path = "embedded:smollm2"
temperature = 0.5
max_tokens = 200
""")
    gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, timeout=1800)
    check_run(tmp_path / "run", reviewers=3)
    models = {r["model"] for r in sql_rows(tmp_path / "run", "SELECT DISTINCT model FROM calls")}
    assert models == {"smol-a", "smol-b"}
