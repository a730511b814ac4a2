"""A stage's version changes when, and only when, its results can: config keys, prompts, filters and model
specs each reach exactly the stages that read them and the stages downstream. On a changed config the run
says what it will redo before it does it, and `--dry-run` says only that (tests/scenarios/test_config_changes.py
checks the recomputed tables and the calls made)."""
import dataclasses
import json
import re

import pytest
from click.testing import CliRunner

from gra_stream import stage_versions
from gra_stream.cli import main
from gra_stream.status import config_differences
from tests.conftest import FAKE_POOL, corpus, fake_config, fake_config_file, head_jsonl, sql_rows

ALL = list(stage_versions.STAGES)


def downstream(*stages):
    """`stages` and every stage that reads from them, directly or not."""
    out = set(stages)
    for name, dep in stage_versions.STAGES.items():  # in pipeline order
        if out & set(dep.reads):
            out.add(name)
    return out


def changed(before, after):
    a, b = stage_versions.versions(before), stage_versions.versions(after)
    return {s for s in ALL if a[s] != b[s]}


def with_model(config, **changes):
    return dataclasses.replace(config, models=(dataclasses.replace(config.models[0], **changes), *config.models[1:]))


BASE = fake_config()


@pytest.mark.parametrize("change,first", [
    (dict(committee={"tau": 6.0}), "review"),
    (dict(committee={"delta": 1.0}), "decide"),
    (dict(committee={"min_reviews": 3}), "review"),  # the short-circuit stops when too few can parse
    (dict(committee={"short_circuit": False}), "review"),
    (dict(filters={"enabled": ["min_length"]}), "gate"),
    (dict(filters={"enabled": ["min_length"], "min_length": {"min_response_chars": 80}}), "gate"),
    (dict(dedup={"threshold": 0.8}), "gate"),
    (dict(decontamination={"references": ["gsm8k_test"]}), "gate"),
    (dict(diversity={"model": "hashing", "threshold": 0.8}), "diversity"),
    (dict(diversity={"model": "hashing", "walk_batch": 512}), "diversity"),  # with cells, batches are results
    (dict(tasks_per_seed=2), "generate"),
    (dict(mode="refinement"), "generate"),
    (dict(run_seed=1), "profile"),
    (dict(fields={"instruction": "question"}), "ingest"),
])
def test_a_config_key_changes_the_stages_that_read_it_and_those_downstream(change, first):
    assert changed(BASE, fake_config(**change)) == downstream(first)


def test_committee_reviewers_reach_generation_where_roles_are_dealt():
    assert changed(BASE, fake_config(committee={"reviewers": 2, "min_reviews": 2})) == downstream("generate")


def test_model_specs_reach_every_llm_stage():
    assert changed(BASE, with_model(BASE, temperature=0.2)) == downstream("profile")
    smaller = fake_config(models=FAKE_POOL[:4])
    assert changed(BASE, smaller) == downstream("profile")


def test_a_prompt_template_reaches_the_stages_that_render_it(tmp_path):
    (tmp_path / "review.txt").write_text("Review this carefully.\n{{instruction}}\n{{response}}\n")
    assert changed(BASE, fake_config(prompts_dir=str(tmp_path))) == downstream("review")
    (tmp_path / "review.txt").unlink()
    (tmp_path / "generate.txt").write_text("Domain {{domain}}: {{keywords_1}} {{summary_1}} {{keywords_2}} {{summary_2}}")
    assert changed(BASE, fake_config(prompts_dir=str(tmp_path))) == downstream("generate")


def test_more_rounds_reach_generation_and_what_follows_it():
    assert changed(BASE, fake_config(rounds=2)) == downstream("generate")
    two = fake_config(rounds=2)
    assert changed(two, fake_config(rounds=2, committee={"tau": 6.0})) == downstream("generate"), \
        "round 2 generates from what round 1 kept"
    assert changed(two, fake_config(rounds=2, run_seed=3)) == downstream("profile")


def asked_anew(before, after):
    """The LLM stages whose requests differ between two configs."""
    a, b = (stage_versions.requests(stage_versions.inputs(c)) for c in (before, after))
    return {s for s, dep in stage_versions.STAGES.items() if dep.models and a[s] != b[s]}


@pytest.mark.parametrize("change,stages", [
    (dict(committee={"tau": 6.0}), set()),  # tau chooses the rows asked about, not what is asked
    (dict(diversity={"model": "hashing", "threshold": 0.8}), set()),
    (dict(filters={"enabled": ["min_length"]}), set()),
    (dict(committee={"delta": 1.0}), set()),
    (dict(tasks_per_seed=2), {"generate", "review", "adjudicate", "annotate"}),  # their prompts quote the generations
    (dict(run_seed=1), {"profile", "generate", "review", "adjudicate", "annotate"}),
    (dict(fields={"instruction": "question"}), {"profile", "generate", "review", "adjudicate", "annotate"}),
])
def test_requests_change_with_what_a_stage_asks_not_with_which_rows_it_asks_about(change, stages):
    """The plan says which stages ask anew, and rows are carried only where the text a stage renders is
    the same (gra_stream/carry.py): these hashes must move exactly with what goes into its prompts."""
    assert asked_anew(BASE, fake_config(**change)) == stages


def test_a_prompt_template_changes_the_requests_of_the_stages_that_render_it_or_quote_them(tmp_path):
    (tmp_path / "profile.txt").write_text("Profile this.\n{{instruction}}\n{{response}}\n")
    assert asked_anew(BASE, fake_config(prompts_dir=str(tmp_path))) == {
        "profile", "generate", "review", "adjudicate", "annotate"}, "annotation asks the profile's questions"


@pytest.mark.parametrize("change,same", [
    (dict(committee={"tau": 6.0}), {"annotate"}),  # tau picks review's reviewers and adjudication's keep
    (dict(filters={"enabled": ["min_length"]}), {"review", "adjudicate", "annotate"}),
    (dict(dedup={"threshold": 0.8}), {"review", "adjudicate", "annotate"}),
    (dict(committee={"delta": 1.0}), {"review", "adjudicate", "annotate"}),
    (dict(tasks_per_seed=2), set()),  # the generations' text changes
])
def test_rows_are_the_same_where_a_stage_s_own_inputs_and_the_text_it_renders_are(change, same):
    """`before` as the run log has it (JSON), `after` as a run computes it from its config."""
    before, after = stage_versions.record(BASE)["inputs"], stage_versions.inputs(fake_config(**change))
    assert {s for s in ("review", "adjudicate", "annotate") if stage_versions.same_rows(before, after, s)} == same


@pytest.mark.parametrize("change,same", [
    (dict(committee={"tau": 6.0}), True),
    (dict(diversity={"model": "hashing", "threshold": 0.5, "index": "exact", "walk_batch": 64}), True),  # the walk, not the vectors
    (dict(filters={"enabled": ["min_length"]}), True),
    (dict(diversity={"model": "embedded:all-minilm-l6-v2"}), False),
    (dict(tasks_per_seed=2), False),  # the generations' text changes under the same ids
    (dict(run_seed=1), False),
])
def test_embeddings_are_the_same_where_the_model_and_the_generations_text_are(change, same):
    """The diversity filter reads back a kept version's embeddings (gra_stream/carry.py, `reusable`) only
    where it would embed the same text with the same model."""
    before, after = stage_versions.record(BASE)["inputs"], stage_versions.inputs(fake_config(**change))
    assert stage_versions.same_work(before, after, "diversity") == same
    assert not stage_versions.same_work(before, after, "review"), "a stage that declares no reusable work"


def test_knobs_that_change_no_result_change_no_version():
    knobs = fake_config(batch_size=7, cpu_batch_size=99, dedup={"batch_size": 5}, processes={"workers": 3},
                        ray={"workers": 5}, vllm={"resident_engines": 1, "max_num_seqs": 8, "kv_cache_gib": 4})
    knobs = with_model(knobs, max_in_flight=3, timeout_s=9.0, max_retries=1, adaptive=False, requests_per_minute=60,
                       price_input=1.0, latency_s=0.5)
    assert changed(BASE, knobs) == set()


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def config_in(folder, extra):
    folder.mkdir()
    return fake_config_file(folder, extra)


def test_a_filter_change_is_said_filter_by_filter_with_the_values_the_filters_use():
    """The plan's first line names each filter change, a parameter with its default where it was unset."""
    before = fake_config(filters={"enabled": ["min_length", "max_length", "refusal", "overlap"]})
    after = fake_config(filters={"enabled": ["min_length", "refusal", "max_length"],
                                 "min_length": {"min_response_chars": 300}})
    old, new = stage_versions.inputs(before), stage_versions.inputs(after)
    assert stage_versions.changes(old, new) == [
        "filters.overlap removed; filters.min_length.min_response_chars 20 -> 300; "
        "filters order ['min_length', 'max_length', 'refusal', 'overlap'] -> ['min_length', 'refusal', 'max_length']"]
    assert stage_versions.changes(new, old)[0].startswith("filters.overlap added; filters.min_length.min_response_chars 300 -> 20")


def test_status_says_unset_for_a_key_one_config_does_not_set():
    assert config_differences({"filters": {"params": {}}}, {"filters": {"params": {"min_length": {"n": 3}}}}) == [
        "filters.params.min_length.n unset, now 3"]
    assert config_differences({"committee": {"tau": None}}, {"committee": {"tau": 8.0}}) == ["committee.tau None, now 8.0"]


def test_a_changed_config_says_what_it_redoes_and_a_knob_is_nothing_to_do(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 40)
    run_dir = tmp_path / "run"
    base = fake_config_file(tmp_path)
    assert cli("run", seeds, "--run-dir", run_dir, "--config", base, "--quiet").exit_code == 0
    reviews = sql_rows(run_dir, "SELECT count(*) AS n FROM reviews")[0]["n"]
    stricter = config_in(tmp_path / "stricter", "[committee]\ntau = 6.0\n")
    dry = cli("run", seeds, "--run-dir", run_dir, "--config", stricter, "--dry-run")
    assert dry.exit_code == 0 and "committee.tau 8.0 -> 6.0" in dry.output
    assert "did not finish" not in dry.output
    line = next(" ".join(line.split()) for line in dry.output.splitlines() if line.startswith("  review "))
    assert line.startswith(f"review {reviews:,} rows kept as v1; the reviews it asked are carried over"), line
    assert not (run_dir / "versions").exists(), "a dry run moves nothing"
    result = cli("run", seeds, "--run-dir", run_dir, "--config", stricter, "--quiet")
    assert result.exit_code == 0
    plan = result.output.splitlines()
    assert plan[0] == "the config changed since these tables were made: committee.tau 8.0 -> 6.0"
    assert [line.split()[0] for line in plan[1:7]] == ["review", "decide", "adjudicate", "diversity", "annotate",
                                                        "finalize"]
    assert "queryable as v1.<table>" in result.output
    kept = sql_rows(run_dir, "SELECT (SELECT count(*) FROM v1.reviews) AS kept, (SELECT count(*) FROM reviews) AS now")
    assert kept[0]["kept"] == reviews and kept[0]["now"] > 0
    knob = config_in(tmp_path / "knob", "batch_size = 7\n[committee]\ntau = 6.0\n")
    result = cli("run", seeds, "--run-dir", run_dir, "--config", knob, "--executor", "processes")
    assert result.exit_code == 0 and "nothing to do" in result.output and "config changed" not in result.output


def test_a_plan_after_a_run_stopped_early_says_its_counts_leave_out_what_that_run_left(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 40)
    run_dir = tmp_path / "run"
    assert cli("run", seeds, "--run-dir", run_dir, "--config", fake_config_file(tmp_path), "--quiet",
               "--max-samples", "1").exit_code == 0
    dry = cli("run", seeds, "--run-dir", run_dir, "--config", config_in(tmp_path / "t", "[committee]\ntau = 6.0\n"),
              "--dry-run")
    assert dry.exit_code == 0 and "committee.tau 8.0 -> 6.0" in dry.output
    assert "(the last run did not finish: the work it left comes on top of these counts)" in dry.output


def test_the_query_the_plan_suggests_for_the_kept_tables_runs_when_no_sample_was_kept(tmp_path):
    """An empty table is not kept aside, so the plan's and status's example queries must name one that is;
    and the plan says nothing is carried over from it."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 20)
    run_dir = tmp_path / "run"
    strict = config_in(tmp_path / "strict", "[committee]\ntau = 10.0\n")
    assert cli("run", seeds, "--run-dir", run_dir, "--config", strict, "--quiet").exit_code == 0
    assert sql_rows(run_dir, "SELECT count(*) AS n FROM samples")[0]["n"] == 0
    result = cli("run", seeds, "--run-dir", run_dir, "--config", config_in(tmp_path / "mild", "[committee]\ntau = 9.0\n"),
                 "--quiet")
    query = re.search(r'gra-stream sql \S+ "([^"]+)"', result.output)
    assert result.exit_code == 0 and query, result.output
    assert cli("sql", run_dir, query[1]).exit_code == 0, query[1]
    kept = re.search(r"\(query as (v1\.\w+);", cli("status", run_dir).output)  # and the one status suggests
    assert kept and cli("sql", run_dir, f"SELECT count(*) FROM {kept[1]}").exit_code == 0, kept
    annotate = re.search(r"\n  annotate +0 rows \(none yet\); (.*)\n", result.output)
    assert annotate and "carried over" not in annotate[1], result.output


def test_fewer_rounds_keep_the_second_round_aside_and_equal_a_one_round_run(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 30)
    run_dir = tmp_path / "run"
    two = config_in(tmp_path / "two", "rounds = 2\n")
    assert cli("run", seeds, "--run-dir", run_dir, "--config", two, "--quiet").exit_code == 0
    one = config_in(tmp_path / "one", "")
    result = cli("run", seeds, "--run-dir", run_dir, "--config", one, "--quiet")
    assert result.exit_code == 0 and "rounds 2 -> 1" in result.output
    fresh = tmp_path / "fresh"
    assert cli("run", seeds, "--run-dir", fresh, "--config", one, "--quiet").exit_code == 0
    query = "SELECT id, decision FROM verdicts ORDER BY id"
    assert sql_rows(run_dir, query) == sql_rows(fresh, query)
    assert sql_rows(run_dir, "SELECT max(round) AS r FROM v1.generations")[0]["r"] == 2


def test_a_dry_run_on_a_new_run_directory_estimates_the_whole_run(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 30)
    config = config_in(tmp_path / "c", "tasks_per_seed = 2\n")
    result = cli("run", seeds, "--run-dir", tmp_path / "new", "--config", config, "--dry-run")
    assert result.exit_code == 0 and not (tmp_path / "new").exists()
    assert ("estimate for 30 seed rows, round 1, at most (before re-asks): profile 30, generate 60, review 180, "
            "adjudicate 60, annotate 60 calls; 390 calls") in result.output
    budgets = 30 * 240 + 60 * 1000 + 180 * 400 + 60 * 260 + 60 * 240  # each call's role budget (reply_schemas)
    assert f"390 calls and {budgets:,} output tokens in all" in result.output
    # a reasoning model's reasoning tokens count as output tokens too: every call may spend them on top
    reasoning = config_in(tmp_path / "r", 'tasks_per_seed = 2\n[[models]]\nname = "o"\nbackend = "openai"\n'
                          'api_model = "o4-mini"\nurl = "https://api.example/v1"\nreasoning_effort = "low"\nreasoning_tokens = 100\n'
                          'temperature = 1.0\ntop_p = 1.0\n')
    result = cli("run", seeds, "--run-dir", tmp_path / "new", "--config", reasoning, "--dry-run")
    assert result.exit_code == 0 and f"390 calls and {budgets + 390 * 100:,} output tokens in all" in result.output, \
        result.output


def prompt_estimate(output: str) -> int:
    return int(re.search(r"and at most about ([\d,]+) prompt tokens", output).group(1).replace(",", ""))


def test_the_dry_run_bounds_the_prompt_tokens_and_prices_them(tmp_path):
    """The prompt-token bound counts the seeds' own text (each character added to 20 seeds' instructions
    adds 20 characters, a token per 4) and holds over what a run sends (the fake backend counts a
    prompt's tokens as its characters / 4, as the bound does); with prices, both sides of the bill."""
    def seeds(name, pad):
        rows = [{"instruction": f"Task {i}: explain the idea." + " more" * pad, "output": "An answer."} for i in range(20)]
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tmp_path / name

    config = config_in(tmp_path / "c", "")
    short, long = (prompt_estimate(cli("run", seeds(name, pad), "--run-dir", tmp_path / "new", "--config", config,
                                       "--dry-run").output) for name, pad in (("short.jsonl", 0), ("long.jsonl", 40)))
    assert abs((long - short) - 20 * 40 * len(" more") / 4) <= 1
    assert cli("run", tmp_path / "short.jsonl", "--run-dir", tmp_path / "r", "--config", config, "--quiet").exit_code == 0
    sent = sql_rows(tmp_path / "r", "SELECT sum(prompt_tokens) AS n FROM calls")[0]["n"]
    assert 0 < sent <= short, (sent, short)
    priced = config_in(tmp_path / "p", '[[models]]\nname = "m"\nbackend = "fake"\nprice_input = 0.5\nprice_output = 2.0\n')
    output = cli("run", tmp_path / "short.jsonl", "--run-dir", tmp_path / "new", "--config", priced, "--dry-run").output
    outputs = int(re.search(r"([\d,]+) output tokens in all", output).group(1).replace(",", ""))
    assert (f"at the dearest model's prices: at most {outputs * 2.0 / 1e6:,.2f} for output tokens and at most about "
            f"{prompt_estimate(output) * 0.5 / 1e6:,.2f} for prompt tokens") in output


def test_status_names_the_model_whose_settings_differ_not_the_whole_pool():
    pool = [{"name": "a", "temperature": 0.7, "latency_s": 0.05}, {"name": "b", "temperature": 0.7, "latency_s": 0.05}]
    now = [{"name": "b", "temperature": 0.7, "latency_s": 0.0}, {"name": "c", "temperature": 0.9}]
    assert config_differences({"models": pool}, {"models": now}) == [
        "models.a present, now absent", "models.c absent, now present", "models.b.latency_s 0.05, now 0.0"]
    assert config_differences({"models": pool}, {"models": pool[::-1]}) == ["models order ['a', 'b'], now ['b', 'a']"]


def test_a_revised_stage_recomputes_tables_made_before_and_says_gra_stream_changed(tmp_path, monkeypatch):
    """Tables made before decide's revision 1 (recorded without it) are recomputed from decide on, as a
    fresh run makes them; the stages before it keep their versions."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 40)
    config = fake_config_file(tmp_path)
    revised = stage_versions.STAGES["decide"]
    monkeypatch.setitem(stage_versions.STAGES, "decide", dataclasses.replace(revised, revision=0))
    assert cli("run", seeds, "--run-dir", tmp_path / "before", "--config", config, "--quiet").exit_code == 0
    monkeypatch.setitem(stage_versions.STAGES, "decide", revised)
    result = cli("run", seeds, "--run-dir", tmp_path / "before", "--config", config, "--quiet")
    assert result.exit_code == 0
    plan = result.output.splitlines()
    assert plan[0].startswith("gra-stream changed since these tables were made: decide revision 0 -> 1 (a sample "
                              "whose reviewers the short-circuit stopped"), plan[0]
    assert [line.split()[0] for line in plan[1:6]] == ["decide", "adjudicate", "diversity", "annotate", "finalize"]
    assert cli("run", seeds, "--run-dir", tmp_path / "fresh", "--config", config, "--quiet").exit_code == 0
    query = "SELECT id, n_reviews, mean, decision, reason FROM verdicts ORDER BY id"
    assert sql_rows(tmp_path / "before", query) == sql_rows(tmp_path / "fresh", query)
