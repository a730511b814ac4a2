"""A changed config, run again on the same run directory, leaves exactly the tables a fresh run under the
new config makes (rule 1), and sends only the requests such a fresh run sends that were never answered in
that directory (rule 2). The models are served over HTTP on loopback by the fake backend's replies, so
that the requests are counted where they arrive, and the call cache (which never holds fake-backend
replies) is in play."""
import io
import json
import re
import shutil
from collections import Counter

import pytest

from gra_stream import carry
from gra_stream.config import config_from_dict
from gra_stream.embeddings import HASHING, HashingEmbedder
from gra_stream.llm import REASK
from gra_stream.plan import preview
from gra_stream.progress import Progress
from gra_stream.runner import run_pipeline
from gra_stream.stages import all_stages
from gra_stream.store import Store
from tests.conftest import FAKE_POOL, Said, corpus, gra, head_jsonl, write_toml
from tests.fault_server import FaultServer
from tests.invariants import KEYED_TABLES, check_run

pytestmark = pytest.mark.slow

NAMES = [m["name"] for m in FAKE_POOL]
FILTERS = ["min_length", "max_length", "refusal", "overlap"]
# The base config: four models of the pool, and a minimum response length that drops about half of the
# fake generations, so that changing the filters both drops rows and lets rows through.
BASE = dict(names=NAMES[:4], filters={"enabled": FILTERS, "min_length": {"min_response_chars": 265}})
WAVES = {"first_seeds": 2}  # the 24 seeds in waves of 2, 8, 8, 6: every change is recomputed wave by wave
TIMING = {"latency_s", "wait_s", "retries"}  # how long a call took differs between runs, by nature


@pytest.fixture(scope="module")
def server():
    with FaultServer(faults=False) as s:
        yield s


def config(url, *, names=NAMES, model_extra=None, **overrides):
    models = [{"name": n, "backend": "openai", "url": url, "api_model": n, "max_in_flight": 16,
               **(model_extra or {}).get(n, {})} for n in names]
    return config_from_dict({"models": models, "diversity": {"model": "hashing"}, "batch_size": 16,
                             "cpu_batch_size": 32, "waves": WAVES, **overrides}, source="<test>")


def run(server, seeds, run_dir, cfg, progress=None, **options) -> Counter:
    """Run (`options`: run_pipeline's, such as the executor) and return the requests the server received
    meanwhile."""
    before = len(server.bodies)
    run_pipeline([seeds], run_dir, cfg, progress=progress or Progress(quiet=True), **options)
    return Counter(server.bodies[before:])


def tables(run_dir) -> dict:
    con = Store(run_dir).connect()
    out = {}
    for table in [*KEYED_TABLES, "ingest_errors", "files"]:
        columns = [c for c in con.sql(f"SELECT * FROM {table} LIMIT 0").columns if c not in TIMING]
        order = "id" if "id" in columns else columns[0]
        out[table] = con.sql(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}").fetchall()
    return out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return head_jsonl(corpus("gsm8k_train"), tmp_path_factory.mktemp("seeds") / "gsm.jsonl", 24)


@pytest.fixture(scope="module")
def base(server, seeds, tmp_path_factory):
    """One run under the base config (four models of the pool), copied by each test."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    asked = run(server, seeds, run_dir, config(server.url, **BASE))
    return run_dir, asked


def prompts_with(tmp_path, name, edit):
    folder = tmp_path / "prompts"
    folder.mkdir()
    from gra_stream.prompts import load_prompt

    (folder / f"{name}.txt").write_text(edit(load_prompt(name, "")), encoding="utf-8")
    return str(folder)


def extra_filter(tmp_path):
    folder = tmp_path / "filters"
    folder.mkdir()
    (folder / "no_digits.sql").write_text(
        "-- param max_digits = 3\nSELECT id, 'many_digits' AS reason, '' AS detail FROM batch\n"
        "WHERE length(regexp_replace(response, '[^0-9]', '', 'g')) > $max_digits\n", encoding="utf-8")
    return {**BASE["filters"], "enabled": [*FILTERS, "no_digits"], "directory": str(folder)}


CHANGES = {
    "tau lower": lambda t: dict(committee={"tau": 6.0}),
    "tau higher": lambda t: dict(committee={"tau": 8.5}),
    "delta": lambda t: dict(committee={"delta": 0.8}),
    "min_reviews": lambda t: dict(committee={"min_reviews": 3}),
    "reviewers": lambda t: dict(committee={"reviewers": 2}),
    "filters enabled": lambda t: dict(filters={"enabled": ["max_length", "refusal", "overlap"]}),
    "filter parameter": lambda t: dict(filters={"enabled": FILTERS, "min_length": {"min_response_chars": 20}}),
    "new filter file": lambda t: dict(filters=extra_filter(t)),
    "dedup threshold": lambda t: dict(dedup={"threshold": 0.3}),
    "decontamination": lambda t: dict(decontamination={"references": ["gsm8k_test"], "ngram": 8}),
    "diversity threshold": lambda t: dict(diversity={"model": "hashing", "threshold": 0.5}),
    "system prompt": lambda t: dict(prompts_dir=prompts_with(t, "system", lambda s: s + "\nBe brief.")),
    "profile prompt": lambda t: dict(prompts_dir=prompts_with(t, "profile", lambda s: "Profile this task.\n" + s)),
    "generate prompt": lambda t: dict(prompts_dir=prompts_with(t, "generate", lambda s: "Be original.\n" + s)),
    "review prompt": lambda t: dict(prompts_dir=prompts_with(t, "review", lambda s: "Be strict.\n" + s)),
    "adjudicate prompt": lambda t: dict(prompts_dir=prompts_with(t, "adjudicate", lambda s: "Be fair.\n" + s)),
    "refine prompt": lambda t: dict(mode="integrated",
                                    prompts_dir=prompts_with(t, "refine", lambda s: "Improve it.\n" + s)),
    "sampling of one model": lambda t: dict(model_extra={"fake-b": {"temperature": 0.2}}),
    "model added": lambda t: dict(names=NAMES),
    "model removed": lambda t: dict(names=NAMES[:3]),
    "run_seed": lambda t: dict(run_seed=7),
    "mode": lambda t: dict(mode="refinement"),
    "rounds raised": lambda t: dict(rounds=2),
    "tasks_per_seed": lambda t: dict(tasks_per_seed=2),
    "one wave": lambda t: dict(waves={"first_seeds": 0}),
    "fields": lambda t: dict(fields={"response": "trim(split_part(answer, '####', 2))"}),  # the final number only
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_config_recomputes_what_a_fresh_run_makes_with_only_the_calls_never_answered(
        change, server, seeds, base, tmp_path):
    base_dir, asked_before = base
    overrides = {**BASE, **CHANGES[change](tmp_path)}
    new = config(server.url, **overrides)
    run_dir = tmp_path / "run"
    shutil.copytree(base_dir, run_dir)
    said = Said(quiet=True)
    asked = run(server, seeds, run_dir, new, progress=said)
    fresh_dir = tmp_path / "fresh"
    fresh = run(server, seeds, fresh_dir, new)
    assert tables(run_dir) == tables(fresh_dir), "the tables of a fresh run under the new config"
    expected = Counter({body: n for body, n in fresh.items() if body not in asked_before})
    assert asked == expected, f"{sum(asked.values())} requests sent, {sum(expected.values())} never answered before"
    assert fresh, "the fresh run asked something"
    check_plan_bounds("\n".join(said.lines), asked)


def test_a_reference_file_edited_in_place_recomputes_the_gate_as_a_fresh_run_does(server, seeds, base, tmp_path):
    """The config names the same file before and after; its content is what the gate's results depend on."""
    base_dir, asked_in_base = base
    run_dir = tmp_path / "run"
    shutil.copytree(base_dir, run_dir)
    reference = tmp_path / "benchmark.jsonl"
    reference.write_text('{"question": "a benchmark item that no generation resembles at all"}\n', encoding="utf-8")
    cfg = config(server.url, **BASE, decontamination={"references": [str(reference)]})
    asked_before = asked_in_base + run(server, seeds, run_dir, cfg)  # every request answered in this directory
    kept = Store(run_dir).connect().sql("SELECT instruction, response FROM samples ORDER BY id").fetchall()
    assert len(kept) >= 2
    reference.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in kept[::2]), encoding="utf-8")
    said = Said(quiet=True)
    asked = run(server, seeds, run_dir, cfg, progress=said)
    assert "decontamination.references " + str(reference) + " changed" in "\n".join(said.lines)
    fresh = run(server, seeds, tmp_path / "fresh", cfg)
    assert tables(run_dir) == tables(tmp_path / "fresh"), "the tables of a fresh run with the edited file"
    assert len(tables(run_dir)["samples"]) <= len(kept) - len(kept[::2]), "the listed samples are dropped as contaminated"
    assert asked == Counter({body: n for body, n in fresh.items() if body not in asked_before})


# The opening words of each LLM stage's templates; annotation asks the profile's questions, so its
# requests are counted with the profile's.
OPENINGS = {"profile": ("profile it",), "generate": ("You write new training samples", "You improve training data"),
            "review": ("strict reviewer of training data",), "adjudicate": ("You are the adjudicator",)}


def check_plan_bounds(plan: str, asked: Counter) -> None:
    """The calls each LLM stage sent, re-asks aside, are within what the plan said: none for a stage it
    said makes no call or left out, at most N where it said "up to N"; "about N" bounds nothing."""
    sent = Counter()
    for body, n in asked.items():
        if REASK.split("{")[0] not in body:
            [stage] = [s for s, words in OPENINGS.items() if any(w in body for w in words)]
            sent[stage] += n
    added = re.search(r"^rounds \d+ -> \d+: .*, at most \(before re-asks\): (.*) calls;", plan, re.M)
    if added:  # more rounds recompute nothing: the plan bounds the first new round's calls
        most = {role: int(n.replace(",", "")) for role, n in re.findall(r"(\w+) ([\d,]+)", added[1])}
        most["profile"] = most.pop("annotate")
        assert all(sent[stage] <= most[stage] for stage in OPENINGS), (sent, plan)
        return
    said = dict(re.findall(r"^  (\w+) +[\d,]+ rows [^;]*; (.*)  \[", plan, re.M))
    assert said or not sent, f"calls were sent with no plan said: {plan!r}"
    if not said:
        return
    bound = {}
    for stage in [*OPENINGS, "annotate"]:
        what = said.get(stage, "no LLM call")
        most = re.search(r"up to ([\d,]+) LLM calls", what)
        bound[stage] = int(most[1].replace(",", "")) if most else 0 if re.search("no LLM call|no work", what) else None
    profile, annotate = bound.pop("profile"), bound.pop("annotate")
    bound["profile"] = None if None in (profile, annotate) else profile + annotate
    for stage, most in bound.items():
        if most is not None:
            assert sent[stage] <= most, f"{stage}: {sent[stage]} calls sent, the plan said {said.get(stage)!r}"


def test_going_back_to_an_earlier_config_brings_its_tables_back_without_a_call(server, seeds, base, tmp_path):
    base_dir, _ = base
    run_dir = tmp_path / "run"
    shutil.copytree(base_dir, run_dir)
    before = tables(run_dir)
    run(server, seeds, run_dir, config(server.url, **BASE, committee={"tau": 6.0}))
    said = Said(quiet=True)
    asked = run(server, seeds, run_dir, config(server.url, **BASE), progress=said)
    assert not asked and tables(run_dir) == before
    assert "come back from v" in "\n".join(said.lines)


@pytest.mark.parametrize("committee,asks_more", [({"tau": 6.0}, True), ({"tau": 8.5}, False),
                                                 ({"short_circuit": False}, True)])
def test_a_short_circuit_change_carries_the_reviews_asked_before_and_reviews_only_the_rest(
        committee, asks_more, server, seeds, base, tmp_path):
    """The reviews asked before are carried (gra_stream/carry.py); the review stage's own segments
    hold only generations that needed a reviewer skipped before, each with a row the old table lacks.
    The plan said how many those are, and the most review calls they could take, and the progress showed
    the carry going through every review kept aside."""
    base_dir, _ = base
    run_dir = tmp_path / "run"
    shutil.copytree(base_dir, run_dir)
    said = Said(stream=io.StringIO())
    asked = run(server, seeds, run_dir, config(server.url, **BASE, committee=committee), progress=said)
    review_calls = sum(n for body, n in asked.items() if "strict reviewer of training data" in body)
    con = Store(run_dir).connect()
    carried = f"read_parquet('{run_dir}/reviews/{carry.PREFIX}*.parquet')"
    own = f"(SELECT * FROM reviews WHERE generation_id NOT IN (SELECT generation_id FROM {carried}))"
    n_carried, n_all = con.sql(f"SELECT (SELECT count(*) FROM {carried}), (SELECT count(*) FROM reviews)").fetchall()[0]
    assert 0 < n_carried <= n_all
    assert con.sql(f"SELECT count(*) FROM {carried} c ANTI JOIN v1.reviews r USING (id, status, raw, strengths) "
                   "WHERE c.status <> 'skipped'").fetchall() == [(0,)], "the asked rows carried as they were"
    reasked = con.sql(f"SELECT count(DISTINCT r.generation_id) FROM {own} r JOIN v1.reviews k USING (id) "
                      "WHERE k.status = 'skipped' AND r.status <> 'skipped' OR k.attempts > 1").fetchall()[0][0]
    assert reasked == con.sql(f"SELECT count(DISTINCT generation_id) FROM {own}").fetchall()[0][0]
    assert (reasked > 0) == asks_more
    planned = re.search(r"review .*carried over; (?:(\d+) generations are reviewed again, up to (\d+) LLM calls|no LLM call)",
                        "\n".join(said.lines))
    assert planned, said.lines
    again, most = (int(planned[1]), int(planned[2])) if planned[1] else (0, 0)
    # a generation re-asked for a review that took several attempts may replay all of them from the cache
    newly_asked = con.sql(f"SELECT count(DISTINCT r.generation_id) FROM {own} r JOIN v1.reviews k USING (id) "
                          "WHERE k.status = 'skipped' AND r.status <> 'skipped'").fetchall()[0][0]
    assert again == reasked and newly_asked <= review_calls <= most
    kept = con.sql("SELECT count(*) FROM v1.reviews").fetchall()[0][0]
    assert f"carry      {kept}/{kept} rows" in said.stream.getvalue()


# The tables whose rows each change carries from the table kept aside, with the column that names the
# input row (the reviews' carry after a tau change, which replays them, is the test above).
CARRIED = {"tau lower": {"annotations": "id"}, "diversity threshold": {"annotations": "id"},
           "filter parameter": {"reviews": "generation_id", "adjudications": "id", "annotations": "id"},
           "system prompt": {}}
STAGE_OF = {"reviews": "review", "adjudications": "adjudicate", "annotations": "annotate"}


@pytest.mark.parametrize("change", list(CARRIED))
def test_rows_made_before_for_the_same_input_and_requests_are_carried_and_only_the_others_asked(
        change, server, seeds, base, tmp_path):
    """A stage recomputed only because the rows it is given changed takes its rows for the input rows it
    had before from the table kept aside (gra_stream/carry.py), as they were; its own segments hold only
    the input rows it had not met. A change of its requests carries nothing."""
    base_dir, _ = base
    run_dir = tmp_path / "run"
    shutil.copytree(base_dir, run_dir)
    said = Said(quiet=True)
    run(server, seeds, run_dir, config(server.url, **{**BASE, **CHANGES[change](tmp_path)}), progress=said)
    plan = "\n".join(said.lines)
    con = Store(run_dir).connect()
    for table, key in CARRIED[change].items():
        carried = f"read_parquet('{run_dir}/{table}/{carry.PREFIX}*.parquet')"
        now, before, moved = ({r[0] for r in con.sql(f"SELECT DISTINCT {key} FROM {t}").fetchall()}
                              for t in (table, f"v1.{table}", carried))
        assert moved == now & before != set(), table
        assert con.sql(f"SELECT count(*) FROM {carried} c ANTI JOIN v1.{table} k USING (id, model, raw)"
                       ).fetchall() == [(0,)], f"{table} carried as they were"
        assert re.search(rf"{STAGE_OF[table]} +[\d,]+ rows kept as v1; recomputed: the rows it made before are "
                         "carried over from v1, the new ones asked", plan), table
    if not CARRIED[change]:
        assert not [p for t in STAGE_OF for p in (run_dir / t).glob(f"{carry.PREFIX}*")]
        assert "carried over from" not in plan


def test_knobs_that_change_no_result_do_no_work(server, seeds, base, tmp_path):
    base_dir, _ = base
    run_dir = tmp_path / "run"
    shutil.copytree(base_dir, run_dir)
    before = tables(run_dir)
    knobs = config(server.url, **BASE, model_extra={n: {"max_in_flight": 3, "timeout_s": 30.0} for n in NAMES},
                   batch_size=5, cpu_batch_size=7, vllm={"resident_engines": 1})
    summary = run_pipeline([seeds], run_dir, knobs, progress=Progress(quiet=True), executor="processes")
    assert not summary.did_work and tables(run_dir) == before
    assert not (run_dir / "versions").exists()


def test_fields_written_differently_but_mapping_each_file_the_same_do_no_work(server, seeds, base, tmp_path):
    """The base run recognised GSM8K's `question` and `answer` by name; `gra-stream init` writes them out,
    and a user may capitalise them: neither changes a seed."""
    base_dir, _ = base
    run_dir = tmp_path / "run"
    shutil.copytree(base_dir, run_dir)
    before = tables(run_dir)
    for fields in ({"instruction": "question", "response": "answer"}, {"instruction": "Question"}, {}):
        summary = run_pipeline([seeds], run_dir, config(server.url, **BASE, fields=fields), progress=Progress(quiet=True))
        assert not summary.did_work and tables(run_dir) == before, fields
        assert preview(Store(run_dir), [seeds], config(server.url, **BASE, fields=fields), all_stages()) \
            .endswith("a run does only what is pending (new seeds, unfinished work)")
    assert not (run_dir / "versions").exists()


def test_new_seeds_and_a_changed_config_in_one_run_are_the_same_on_every_executor(server, seeds, base, tmp_path,
                                                                                   ray_cluster):
    """Seeds added to a run anchor tasks on every seed profiled by then, and earlier tasks keep what they had
    (docs/resuming.md), so a run that adds seeds is compared with the same run in this process."""
    base_dir, _ = base
    more = head_jsonl(corpus("gsm8k_train"), tmp_path / "more.jsonl", 40)
    new = config(server.url, **{**BASE, "committee": {"tau": 6.5}, "filters": {"enabled": FILTERS}})
    asked = {}
    toml = write_toml(tmp_path / "new.toml", "batch_size = 16\ncpu_batch_size = 32\n[committee]\ntau = 6.5\n"
                      f"[filters]\nenabled = {FILTERS!r}\n[diversity]\nmodel = \"hashing\"\n"
                      f"[waves]\nfirst_seeds = {WAVES['first_seeds']}\n" + "".join(
                          f'[[models]]\nname = "{n}"\nbackend = "openai"\nurl = "{server.url}"\napi_model = "{n}"\n'
                          f"max_in_flight = 16\n" for n in NAMES[:4]))
    for executor in ("local", "processes", "ray"):
        run_dir = tmp_path / executor
        shutil.copytree(base_dir, run_dir)
        before = len(server.bodies)
        if executor == "ray":  # in a process of its own, as a user runs it (Ray is not for this test process)
            gra("run", more, "--run-dir", run_dir, "--config", toml, "--executor", "ray", "--ray-address", ray_cluster,
                "--quiet")
        else:
            run_pipeline([more], run_dir, new, progress=Progress(quiet=True), executor=executor)
        asked[executor] = Counter(server.bodies[before:])
        check_run(run_dir)
    assert tables(tmp_path / "local") == tables(tmp_path / "processes") == tables(tmp_path / "ray")
    assert asked["local"] == asked["processes"] == asked["ray"] and asked["local"]
    con = Store(tmp_path / "ray").connect()
    assert con.sql("SELECT count(*) FROM seeds").fetchall() == [(40,)]
    assert con.sql("SELECT id FROM v1.samples ORDER BY id").fetchall() == \
        Store(base_dir).connect().sql("SELECT id FROM samples ORDER BY id").fetchall()


# Whether each change leaves the diversity filter's embeddings of a generation as they were.
REUSED = {"tau lower": True, "diversity threshold": True, "filter parameter": True, "generate prompt": False}


@pytest.mark.parametrize("change", list(REUSED))
def test_the_diversity_filter_reads_back_the_embeddings_of_the_generations_it_had(
        change, server, seeds, base, tmp_path, monkeypatch):
    """A recomputed diversity filter embeds only the candidates the table kept aside lacks, where the
    change leaves their text and the embedding model as they were (gra_stream/carry.py, `reusable`); a
    new generation prompt changes the texts under the same ids, and every candidate is embedded again.
    The tables equal a fresh run's either way (the test above). The hashing embedder stands in for
    MiniLM here (tests/scenarios/test_minilm_runs.py has MiniLM itself)."""
    monkeypatch.setattr(carry, "READ_BACK", {HASHING})
    assert embedded_again(change, server, seeds, base, tmp_path, monkeypatch) == ("new" if REUSED[change] else "all")


def test_the_hashing_embedder_embeds_again_rather_than_read_back(server, seeds, base, tmp_path, monkeypatch):
    """It embeds a batch about as fast as its vectors are read back from a kept table (`embeddings.READ_BACK`)."""
    assert embedded_again("tau lower", server, seeds, base, tmp_path, monkeypatch) == "all"


def embedded_again(change, server, seeds, base, tmp_path, monkeypatch) -> str:
    """Re-run the base run under `change`: "all" where the diversity filter embedded every candidate again
    and the plan said nothing of reading them back, "new" where it embedded only the candidates the kept
    table lacks and the plan said it read the others back."""
    embedded = []
    real_embed = HashingEmbedder.embed
    monkeypatch.setattr(HashingEmbedder, "embed", lambda self, texts: embedded.extend(texts) or real_embed(self, texts))
    base_dir, _ = base
    run_dir = tmp_path / "run"
    shutil.copytree(base_dir, run_dir)
    said = Said(quiet=True)
    run(server, seeds, run_dir, config(server.url, **{**BASE, **CHANGES[change](tmp_path)}), progress=said)
    con = Store(run_dir).connect()
    candidates = dict(con.sql("SELECT d.id, g.instruction FROM diversity d JOIN generations g USING (id)").fetchall())
    had = {r[0] for r in con.sql("SELECT id FROM v1.diversity").fetchall()}
    assert candidates.keys() & had, "the change keeps some candidates"
    read_back = "the embeddings it made before are read back from v1" in "\n".join(said.lines)
    if Counter(embedded) == Counter(candidates.values()) and not read_back:
        return "all"
    assert Counter(embedded) == Counter(t for i, t in candidates.items() if i not in had) and read_back
    return "new"
