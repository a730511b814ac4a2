"""The examples in README.md and docs/ run as written."""
import re
import shlex
import subprocess
import sys

import duckdb
import polars as pl

from gra_stream.sql_filters import apply_filters, load_filters
from tests.conftest import ROOT, fake_config, run_fake, corpus


def blocks(path, lang):
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / path).read_text(), flags=re.S)


def test_readme_tour_runs_as_written(tmp_path):
    corpus("self_instruct_seed_tasks")
    tour = next(b for b in blocks("README.md", "bash") if "runs/si" in b)
    for line in tour.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == ".venv/bin/gra-stream"
        argv = [sys.executable, "-m", "gra_stream", *[a.replace("runs/si", str(tmp_path / "si")) for a in argv[1:]]]
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (line, result.stderr[-1000:])
    assert (tmp_path / "si" / "samples").is_dir()


def test_plain_duckdb_and_polars_examples_read_a_run(tmp_path):
    run_dir = tmp_path / "run"
    run_fake([corpus("gsm8k_test")], run_dir)
    sql = blocks("docs/tables.md", "sql")[0].replace("DIR", str(run_dir))
    con = duckdb.connect()
    rows = [con.sql(statement).fetchall() for statement in sql.split(";") if statement.strip()][-1]
    assert sum(n for _, n in rows) == con.sql(f"SELECT count(*) FROM '{run_dir}/samples/*.parquet'").fetchall()[0][0] > 0
    code = blocks("docs/tables.md", "python")[0].replace("DIR", str(run_dir))
    scope = {}
    exec(code, scope)
    assert isinstance(scope["samples"], pl.DataFrame) and scope["samples"].height == sum(n for _, n in rows)


def test_the_filter_example_in_the_docs_works(tmp_path):
    sql = next(b for b in blocks("docs/sql-filters.md", "sql") if "param" in b)
    (tmp_path / "shortest.sql").write_text(sql)
    config = fake_config(filters={"enabled": ["shortest"], "directory": str(tmp_path),
                                  "shortest": {"min_response_chars": 30}})
    batch = pl.DataFrame({"id": ["a", "b"], "instruction": ["Say hi.", "Say hi."],
                          "response": ["Hi!", "Hello there, it is good to meet you."]})
    assert apply_filters(load_filters(config), batch) == {"a": ("too_short", "3 chars")}


def test_the_stage_example_in_the_docs_works(tmp_path, monkeypatch):
    import pyarrow as pa

    from gra_stream import schemas
    from gra_stream.progress import Progress
    from gra_stream.runner import run_pipeline
    from gra_stream.stages import all_stages
    from gra_stream.store import Store

    code = next(b for b in blocks("docs/stages.md", "python") if "STAGE = Stage" in b)
    scope = {}
    exec(code, scope)
    monkeypatch.setitem(schemas.TABLES, "shouts", pa.schema([("id", pa.string()), ("instruction", pa.string())]))
    seeds = corpus("gsm8k_test")
    run_pipeline([seeds], tmp_path / "run", fake_config(), progress=Progress(quiet=True),
                 stages=[*all_stages(), scope["STAGE"]])
    con = Store(tmp_path / "run").connect()
    shouts = con.sql("SELECT x.instruction, s.instruction FROM shouts x JOIN samples s USING (id)").fetchall()
    assert shouts and all(a == b.upper() for a, b in shouts)


def test_the_toml_examples_in_the_docs_are_valid_configs(tmp_path):
    import tomllib

    from gra_stream.config import config_from_dict

    server = tomllib.loads(blocks("docs/backends.md", "toml")[0])
    config = config_from_dict(server, source="docs/backends.md")
    assert config.models[0].backend == "openai" and config.models[0].max_in_flight == 64
    filters = tomllib.loads(blocks("docs/sql-filters.md", "toml")[0])
    (tmp_path / "my_filters").mkdir()
    (tmp_path / "my_filters" / "mine.sql").write_text("SELECT id, 'mine' AS reason, '' AS detail FROM batch WHERE false")
    filters["filters"]["directory"] = str(tmp_path / "my_filters")
    assert [f.name for f in load_filters(fake_config(**filters))] == ["min_length", "max_length", "refusal", "overlap", "mine"]


def test_the_scaling_out_page_shows_a_valid_config_and_real_options():
    import tomllib

    from gra_stream.config import config_from_dict

    config = config_from_dict(tomllib.loads(blocks("docs/scaling-out.md", "toml")[0]), source="docs/scaling-out.md")
    assert (config.ray.workers, config.ray.cpus_per_worker, config.ray.gpus_per_worker) == (8, 4.0, -1.0)
    run_help = subprocess.run([sys.executable, "-m", "gra_stream", "run", "--help"], capture_output=True, text=True).stdout
    command = next(line for line in blocks("docs/scaling-out.md", "bash")[0].splitlines() if line.startswith("gra-stream"))
    for option in (a for a in shlex.split(command) if a.startswith("--")):
        assert option in run_help, option


def test_the_mappings_in_the_fields_doc_are_what_init_proposes(tmp_path):
    from click.testing import CliRunner

    from gra_stream.cli import main

    text = (ROOT / "docs" / "fields.md").read_text()
    pairs = re.findall(r"```jsonl\n(.*?)```\s*```toml\n(.*?)```", text, flags=re.S)
    assert len(pairs) == 10
    for i, (record, expected) in enumerate(pairs):
        (tmp_path / f"{i}.jsonl").write_text(record)
        result = CliRunner().invoke(main, ["init", str(tmp_path / f"{i}.jsonl"), "-o", str(tmp_path / f"{i}.toml")])
        assert result.exit_code == 0, result.output
        assert expected.strip() in (tmp_path / f"{i}.toml").read_text(), record


def test_the_package_map_names_every_module():
    text = (ROOT / "docs" / "package-map.md").read_text()
    modules = [p.relative_to(ROOT / "gra_stream").as_posix() for p in (ROOT / "gra_stream").rglob("*.py")
               if p.name != "__main__.py" and p.parent.name not in ("bundled", "prompts") and p.stat().st_size]
    missing = [m for m in modules if f"`{m}`" not in text and f"`{m.removesuffix('__init__.py')}`" not in text]
    assert missing == []


def test_every_docs_page_the_project_names_exists():
    """A `docs/NAME.md` named in a comment, a message or a page, and every relative Markdown link, resolves."""
    texts = {p: p.read_text() for pattern in ("gra_stream/**/*.py", "configs/*.toml", "sql/**/*.sql", "*.md",
                                             "docs/*.md", "benchmarks/*.md", "benchmarks/*.py")
             for p in ROOT.glob(pattern)}
    missing = []
    for path, text in texts.items():
        named = {ROOT / m for m in re.findall(r"\bdocs/[\w-]+\.md", text)}
        linked = {path.parent / m for m in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", text)}
        missing += [f"{path.relative_to(ROOT)} -> {t.resolve().relative_to(ROOT)}" for t in named | linked
                    if not t.exists()]
    assert missing == []
