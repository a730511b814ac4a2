import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from gra_stream.cli import main
from tests.conftest import frame, run_fake, corpus


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / "run"
    run_fake([corpus("self_instruct_seed_tasks")], run_dir)
    return run_dir


def export(run_dir, fmt, out, *extra):
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", fmt, "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_every_format_holds_every_sample(run_dir, tmp_path):
    samples = frame(run_dir, "SELECT id, instruction, response FROM samples ORDER BY id")
    pairs = set(zip(samples["instruction"], samples["response"]))
    assert f"wrote {samples.height} samples" in export(run_dir, "jsonl", tmp_path / "s.jsonl")
    rows = [json.loads(l) for l in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert {(r["instruction"], r["response"]) for r in rows} == pairs and set(rows[0]) == {"instruction", "response"}
    export(run_dir, "alpaca", tmp_path / "a.json")
    alpaca = json.loads((tmp_path / "a.json").read_text())
    assert {(r["instruction"], r["output"]) for r in alpaca} == pairs and all(r["input"] == "" for r in alpaca)
    export(run_dir, "sharegpt", tmp_path / "g.jsonl")
    convs = [json.loads(l)["conversations"] for l in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert {(c[0]["value"], c[1]["value"]) for c in convs} == pairs and convs[0][0]["from"] == "human"
    export(run_dir, "messages", tmp_path / "m.jsonl")
    chats = [json.loads(l)["messages"] for l in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(c[0]["content"], c[1]["content"]) for c in chats] == list(zip(samples["instruction"], samples["response"]))
    assert [c[0]["role"] for c in chats[:1]] == ["user"] and chats[0][1]["role"] == "assistant"
    export(run_dir, "parquet", tmp_path / "s.parquet")
    assert pq.read_table(tmp_path / "s.parquet").column("instruction").to_pylist() == samples["instruction"].to_list()
    export(run_dir, "hf", tmp_path / "hf")
    table = pq.read_table(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet")
    assert table.num_rows == samples.height and "data/train-*.parquet" in (tmp_path / "hf" / "README.md").read_text()


def test_metadata_carries_scores_and_provenance(run_dir, tmp_path):
    export(run_dir, "jsonl", tmp_path / "m.jsonl", "--metadata")
    row = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert row["score"] >= 8.0 and len(row["reviewers"]) == 3 and row["generator"] and row["decided_by"]
    assert row["generator"] not in row["reviewers"]


def test_the_format_follows_the_output_name(run_dir, tmp_path):
    """Without --format the name decides; a name that says another format than --format is refused, where
    before `-o out.parquet` wrote JSON lines into it."""
    n = frame(run_dir, "SELECT count(*) AS n FROM samples")["n"][0]
    for name, fmt in (("s.parquet", "parquet"), ("s.jsonl", "jsonl"), ("s.json", "alpaca")):
        result = CliRunner().invoke(main, ["export", str(run_dir), "-o", str(tmp_path / name)])
        assert result.exit_code == 0 and f"({fmt})" in result.output, result.output
    assert pq.read_table(tmp_path / "s.parquet").num_rows == n
    assert len(json.loads((tmp_path / "s.json").read_text())) == n
    for args, says in ((["-o", "s.txt"], "cannot tell the export format"),
                       (["-o", "s.csv"], "a CSV of the samples: gra-stream sql RUN_DIR"),
                       (["--format", "jsonl", "-o", "t.parquet"], "writes JSON, but the name 't.parquet' says Parquet"),
                       (["--format", "parquet", "-o", "t.jsonl"], "writes Parquet"),
                       (["--format", "hf", "-o", "t.json"], "writes a dataset folder")):
        out = [a if not a.startswith(("s.", "t.")) else str(tmp_path / a) for a in args]
        result = CliRunner().invoke(main, ["export", str(run_dir), *out])
        assert result.exit_code == 1 and says in result.output, result.output
        assert not (tmp_path / args[-1]).exists()


def test_export_errors_are_clean(run_dir, tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path / "nope"), "-o", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 1 and "does not exist" in result.output
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(main, ["export", str(run_dir), "-o", str(tmp_path / "file" / "x.jsonl")])
    assert result.exit_code == 1 and result.output.startswith("Error: cannot write ") and "Traceback" not in result.output


def test_every_character_survives_each_format(run_dir, tmp_path):
    """Quotes, tabs, newlines, U+2028, accents, CJK and emoji come back from every format as they are in
    `samples`, and JSON files keep them as UTF-8 rather than escapes."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    segment = pq.read_table(next((copy / "samples").glob("finalize-*.parquet")))
    odd = [f'Explique «ça» {i}: "中文"\t\n🚀 \u2028 \\ /' for i in range(segment.num_rows)]
    segment = segment.set_column(segment.schema.get_field_index("instruction"), "instruction", pa.array(odd))
    segment = segment.set_column(segment.schema.get_field_index("id"), "id", pa.array([f"~{i:04}" for i in range(len(odd))]))
    pq.write_table(segment, copy / "samples" / "finalize-00000000000000ff.parquet")
    expected = frame(copy, "SELECT instruction FROM samples ORDER BY id")["instruction"].to_list()
    assert expected[-len(odd):] == odd
    def lines(p):  # as JSON Lines readers split them: at \n only (str.splitlines also splits at U+2028)
        return [json.loads(line) for line in p.read_text(encoding="utf-8").split("\n") if line]

    read = {"jsonl": lambda p: [r["instruction"] for r in lines(p)],
            "alpaca": lambda p: [r["instruction"] for r in json.loads(p.read_text(encoding="utf-8"))],
            "sharegpt": lambda p: [r["conversations"][0]["value"] for r in lines(p)],
            "messages": lambda p: [r["messages"][0]["content"] for r in lines(p)],
            "parquet": lambda p: pq.read_table(p).column("instruction").to_pylist()}
    for fmt, back in read.items():
        out = tmp_path / f"out-{fmt}.{'parquet' if fmt == 'parquet' else 'json' if fmt == 'alpaca' else 'jsonl'}"
        export(copy, fmt, out)
        assert back(out) == expected, fmt
        assert fmt == "parquet" or "中文" in out.read_text(encoding="utf-8")


def test_the_hf_export_loads_with_the_datasets_package(run_dir, tmp_path, monkeypatch):
    """Read back by Hugging Face `datasets` itself, offline, both as a folder and as parquet files."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    export(run_dir, "hf", tmp_path / "hf", "--metadata")
    samples = frame(run_dir, "SELECT id, instruction, response, score FROM samples ORDER BY id")
    for loaded in (datasets.load_dataset(str(tmp_path / "hf"), split="train"),
                   datasets.load_dataset("parquet", data_dir=str(tmp_path / "hf" / "data"), split="train")):
        assert loaded.num_rows == samples.height > 0
        by_id = {r["id"]: r for r in loaded}
        first = samples.row(0, named=True)
        assert by_id[first["id"]]["instruction"] == first["instruction"]
        assert by_id[first["id"]]["score"] == pytest.approx(first["score"])
        assert isinstance(by_id[first["id"]]["reviewers"], list)  # provenance survives as a list column


def test_a_run_that_kept_no_sample_exports_empty_files_that_read_back(run_dir, tmp_path):
    """The demo's 135M model often keeps nothing: every format still writes a file its readers take."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for segment in (copy / "samples").glob("finalize-*.parquet"):
        segment.unlink()
    export(copy, "alpaca", tmp_path / "e.json")
    assert json.loads((tmp_path / "e.json").read_text()) == []
    export(copy, "jsonl", tmp_path / "e.jsonl")
    assert (tmp_path / "e.jsonl").read_text() == ""
    export(copy, "parquet", tmp_path / "e.parquet")
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == 0 and table.column_names == ["instruction", "response"]


def test_an_export_of_no_sample_says_where_to_see_why(tmp_path):
    seeds = tmp_path / "s.jsonl"
    seeds.write_text('{"instruction": "Say hi.", "output": "Hi there, friend."}\n')
    config = tmp_path / "c.toml"
    config.write_text("[filters.min_length]\nmin_response_chars = 100000\n")  # every generation too short: nothing is kept
    result = CliRunner().invoke(main, ["run", str(seeds), "--run-dir", str(tmp_path / "r"), "--config", str(config),
                                       "--backend", "fake", "--quiet"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["export", str(tmp_path / "r"), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0 and "wrote 0 samples" in result.output
    assert f"`gra-stream status {tmp_path / 'r'}` counts the rejections by reason" in result.output
