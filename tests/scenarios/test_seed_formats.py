"""Seed corpora as users have them, built from the repository's own GSM8K rows: capitalised names, chat
records, list fields, instruction-only seeds, field expressions, folders of shards and `save_to_disk`
datasets. For each: `init` proposes a config, `run` accepts it, every row becomes a seed with the right
instruction, and a fake-backend run keeps samples."""
import json
import shutil

import polars as pl
import pytest
from click.testing import CliRunner

from gra_stream.cli import main
from tests.conftest import corpus, fake_config_file, read_jsonl, sql_rows

N = 30
GSM = read_jsonl(corpus("gsm8k_train"), N)
QUESTIONS = [r["question"] for r in GSM]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def init_then_run(tmp_path, seeds, *, extra="", mode="synthesis"):
    """`init` a config for `seeds`, point it at the fake pool, run; returns the run directory and init's output."""
    proposed = tmp_path / "init.toml"
    result = cli("init", seeds, "-o", proposed)
    assert result.exit_code == 0, result.output
    fields = proposed.read_text()
    fields = fields[fields.index("[fields]"):fields.index("\n\n", fields.index("[fields]"))]
    config = fake_config_file(tmp_path, f'mode = "{mode}"\n{extra}\n{fields}\n')
    run_dir = tmp_path / "run"
    ran = cli("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet")
    assert ran.exit_code == 0, ran.output
    return run_dir, result.output


def seed_instructions(run_dir):
    return sorted(r["instruction"] for r in sql_rows(run_dir, "SELECT instruction FROM seeds"))


def kept(run_dir):
    return sql_rows(run_dir, "SELECT count(*) AS n FROM samples")[0]["n"]


def test_capitalised_and_upper_case_names(tmp_path):
    seeds = write_jsonl(tmp_path / "upper.jsonl", [{"Difficulty": "easy", "QUESTION": r["question"],
                                                    "LONG_ANSWER": r["answer"]} for r in GSM])
    run_dir, said = init_then_run(tmp_path, seeds)
    assert "instruction=QUESTION input=- response=LONG_ANSWER" in said
    assert seed_instructions(run_dir) == sorted(QUESTIONS) and kept(run_dir) > 0


@pytest.mark.parametrize("style", ["sharegpt", "openai"])
def test_chat_records_use_the_first_user_turn_and_the_reply_after_it(tmp_path, style):
    def turn(role, text):
        return {"from": {"user": "human", "assistant": "gpt"}.get(role, role), "value": text} \
            if style == "sharegpt" else {"role": role, "content": text}
    key = "conversations" if style == "sharegpt" else "messages"
    records = [{key: [turn("system", "You are a helpful tutor."), turn("user", r["question"]),
                      turn("assistant", r["answer"]), turn("user", "Thanks! Another one?"),
                      turn("assistant", "Sure.")]} for r in GSM]
    run_dir, said = init_then_run(tmp_path, write_jsonl(tmp_path / f"{style}.jsonl", records))
    assert f"chat={key}" in said
    rows = sql_rows(run_dir, "SELECT instruction, input, response FROM seeds")
    assert sorted(r["instruction"] for r in rows) == sorted(QUESTIONS)
    assert {r["response"] for r in rows} == {r["answer"] for r in GSM} and all(r["input"] == "" for r in rows)
    assert kept(run_dir) > 0


def test_a_list_of_passages_becomes_the_input_joined_by_lines(tmp_path):
    records = [{"question": r["question"], "CONTEXTS": [f"Passage {i}.", "Numbers add up."], "answer": r["answer"]}
               for i, r in enumerate(GSM)]
    run_dir, said = init_then_run(tmp_path, write_jsonl(tmp_path / "rag.jsonl", records))
    assert "input=CONTEXTS" in said
    inputs = {r["input"] for r in sql_rows(run_dir, "SELECT input FROM seeds")}
    assert inputs == {f"Passage {i}.\nNumbers add up." for i in range(N)} and kept(run_dir) > 0


@pytest.mark.parametrize("mode", ["synthesis", "refinement"])
def test_instruction_only_seeds(tmp_path, mode):
    seeds = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": q} for q in QUESTIONS])
    run_dir, said = init_then_run(tmp_path, seeds, mode=mode)
    assert "response=-" in said and "instruction-only" in said
    assert seed_instructions(run_dir) == sorted(QUESTIONS)
    status = json.loads(cli("status", run_dir, "--json").output)
    assert status["funnel"]["seeds_without_response"] == N and kept(run_dir) > 0
    if mode == "refinement":  # the generator wrote the responses the seeds lacked, and the committee reviewed them
        refined = sql_rows(run_dir, "SELECT instruction, response FROM generations WHERE kind = 'refine' AND status = 'ok'")
        assert refined and all(r["response"] and r["instruction"] in QUESTIONS for r in refined)
        prompts = sql_rows(run_dir, "SELECT count(*) AS n FROM reviews WHERE status = 'ok'")
        assert prompts[0]["n"] > 0


def test_init_guesses_from_values_when_no_name_is_known(tmp_path):
    records = [{"uid": f"q{i}", "col_a": r["question"], "col_b": r["answer"]} for i, r in enumerate(GSM)]
    seeds = write_jsonl(tmp_path / "anon.jsonl", records)
    run_dir, said = init_then_run(tmp_path, seeds)
    assert "instruction=col_a input=- response=col_b" in said and "is a guess" in said
    text = (tmp_path / "init.toml").read_text()
    assert "'uid': text" in text and "'col_a': text" in text and '"q0"' in text, "evidence comments"
    assert seed_instructions(run_dir) == sorted(QUESTIONS) and kept(run_dir) > 0


def test_init_does_not_propose_the_input_as_the_response(tmp_path):
    """A reading-comprehension set (SQuAD's layout): the question by name, the passage as its input by
    name, the answers in an object. The passage is not also proposed as the response."""
    records = [{"id": str(i), "context": f"Passage {i}: " + r["answer"], "question": r["question"],
                "answers": {"text": [r["answer"][-3:]], "answer_start": [0]}} for i, r in enumerate(GSM)]
    seeds = write_jsonl(tmp_path / "squad.jsonl", records)
    result = cli("init", seeds, "-o", tmp_path / "c.toml")
    assert result.exit_code == 0 and "instruction=question input=context response=-" in result.output, result.output


def test_init_still_writes_a_config_for_a_file_without_text(tmp_path):
    seeds = write_jsonl(tmp_path / "numbers.jsonl", [{"a": i, "b": i * 2} for i in range(5)])
    result = cli("init", seeds, "-o", tmp_path / "c.toml")
    assert result.exit_code == 0 and "no field holds text" in result.output
    assert 'instruction = "a"' in (tmp_path / "c.toml").read_text()
    unreadable = tmp_path / "bad.jsonl"
    unreadable.write_text("{not json\n")
    result = cli("init", unreadable, "-o", tmp_path / "d.toml")
    assert result.exit_code == 1 and "no readable record" in result.output


def test_a_field_expression_maps_what_a_name_cannot(tmp_path):
    records = [{"q": r["question"], "passages": ["First.", f"Second {i}."], "a": r["answer"], "n": i}
               for i, r in enumerate(GSM)]
    seeds = write_jsonl(tmp_path / "expr.jsonl", records)
    config = fake_config_file(tmp_path, '[fields]\ninstruction = "q"\ninput = "array_to_string(passages, chr(10))"\n'
                                        'response = "a || \' (#\' || n || \')\'"\n')
    result = cli("run", seeds, "--run-dir", tmp_path / "run", "--config", config, "--quiet")
    assert result.exit_code == 0, result.output
    rows = sql_rows(tmp_path / "run", "SELECT input, response FROM seeds ORDER BY line")
    assert [r["input"] for r in rows] == [f"First.\nSecond {i}." for i in range(N)]
    assert [r["response"] for r in rows] == [f"{r['answer']} (#{i})" for i, r in enumerate(GSM)]
    bad = fake_config_file(tmp_path, '[fields]\ninstruction = "q"\ninput = "array_to_string(no_such_column, \'x\')"\n')
    result = cli("run", seeds, "--run-dir", tmp_path / "run2", "--config", bad, "--quiet")
    assert result.exit_code == 1 and "[fields] input = \"array_to_string(no_such_column, 'x')\" does not evaluate" \
        in result.output and "no_such_column" in result.output
    assert not (tmp_path / "run2").exists()


def test_a_row_an_expression_fails_on_is_a_bad_row_with_a_one_line_reason(tmp_path):
    seeds = write_jsonl(tmp_path / "n.jsonl", [{"q": "1", "a": "x"}, {"q": "abc", "a": "y"}, {"q": "3", "a": "z"}])
    config = fake_config_file(tmp_path, '[fields]\ninstruction = "CAST(CAST(q AS INTEGER) + 1 AS VARCHAR)"\n'
                                        'response = "a"\n')
    result = cli("run", seeds, "--run-dir", tmp_path / "run", "--config", config, "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(seed_instructions(tmp_path / "run")) == ["2", "4"]
    [bad] = sql_rows(tmp_path / "run", "SELECT line, reason FROM ingest_errors")
    assert bad["line"] == 2 and bad["reason"].startswith("instruction expression failed: Conversion Error")
    assert "'abc'" in bad["reason"] and "\n" not in bad["reason"] and "FROM record" not in bad["reason"]


def test_a_folder_of_parquet_shards_gives_its_train_split(tmp_path):
    data = tmp_path / "hub" / "data"
    data.mkdir(parents=True)
    frame = pl.DataFrame({"question": QUESTIONS, "answer": [r["answer"] for r in GSM]})
    frame.head(20).write_parquet(data / "train-00000-of-00002.parquet")
    frame.slice(20).write_parquet(data / "train-00001-of-00002.parquet")
    pl.DataFrame({"question": ["A test question?"], "answer": ["No."]}).write_parquet(data / "test-00000-of-00001.parquet")
    (tmp_path / "hub" / "README.md").write_text("# a dataset card\n")
    run_dir, proposed = init_then_run(tmp_path, tmp_path / "hub")
    assert seed_instructions(run_dir) == sorted(QUESTIONS) and kept(run_dir) > 0
    # Every command that reads the folder says what it left out.
    note = f"note: {tmp_path / 'hub'}: only its train split is read, test (1 file) left out"
    config = tmp_path / "fake.toml"  # init_then_run's
    dry = cli("run", tmp_path / "hub", "--run-dir", tmp_path / "dry", "--config", config, "--dry-run")
    again = cli("run", tmp_path / "hub", "--run-dir", run_dir, "--config", config)
    assert all(note in result.output for result in (dry, again)) and note in proposed, (dry.output, proposed)
    everything = cli("run", data / "*.parquet", "--run-dir", tmp_path / "all", "--config", config)
    assert everything.exit_code == 0 and "left out" not in everything.output
    assert seed_instructions(tmp_path / "all") == sorted(QUESTIONS + ["A test question?"]), "a pattern names its files"


def test_a_spreadsheets_windows_1252_csv_is_read_and_every_command_says_so(tmp_path):
    """Excel's "CSV (Comma delimited)" on Western-locale Windows is not UTF-8: before, its first accented
    row ended the file."""
    import csv
    import io

    accented = [f"{q} R\u00e9ponds en fran\u00e7ais, s\u2019il te pla\u00eet." for q in QUESTIONS]
    out = io.StringIO()
    csv.writer(out).writerows([["Question", "Answer"], *[[q, r["answer"]] for q, r in zip(accented, GSM)]])
    seeds = tmp_path / "excel.csv"
    seeds.write_bytes(out.getvalue().replace("\u2212", "-").encode("cp1252"))
    run_dir, proposed = init_then_run(tmp_path, seeds)
    assert seed_instructions(run_dir) == sorted(accented) and kept(run_dir) > 0
    config = tmp_path / "fake.toml"  # init_then_run's
    dry = cli("run", seeds, "--run-dir", tmp_path / "dry", "--config", config, "--dry-run")
    ran = cli("run", seeds, "--run-dir", tmp_path / "again", "--config", config)
    assert "excel.csv is not UTF-8 and is read as Windows-1252" in proposed
    assert f"{seeds} (read as Windows-1252: not UTF-8): instruction=Question" in dry.output, dry.output
    assert f"ingest     {seeds} (read as Windows-1252: not UTF-8): {N} rows, {N} new seeds" in ran.output, ran.output


def test_json_lines_of_bare_turn_lists_map_as_chats(tmp_path):
    seeds = write_jsonl(tmp_path / "turns.jsonl", [[{"from": "human", "value": r["question"]},
                                                     {"from": "gpt", "value": r["answer"]}] for r in GSM])
    run_dir, proposed = init_then_run(tmp_path, seeds)
    assert "chat=messages" in proposed and seed_instructions(run_dir) == sorted(QUESTIONS) and kept(run_dir) > 0


def test_a_hub_download_folder_gives_its_seed_file_only(tmp_path):
    """`hf download NAME --repo-type dataset --local-dir DIR` leaves a dataset card, .gitattributes, the
    older hub's dataset_infos.json and a .cache folder beside the data: the data file alone is read."""
    hub = tmp_path / "hub"
    (hub / ".cache" / "huggingface" / "download").mkdir(parents=True)
    write_jsonl(hub / "gsm8k.jsonl", [{"question": r["question"], "answer": r["answer"]} for r in GSM])
    (hub / "dataset_infos.json").write_text(json.dumps({"default": {"description": "GSM8K", "features": {
        "question": {"dtype": "string"}, "answer": {"dtype": "string"}}}}, indent=2))
    (hub / "README.md").write_text("# a dataset card\n")
    (hub / ".gitattributes").write_text("*.jsonl filter=lfs\n")
    (hub / ".cache" / "huggingface" / "download" / "gsm8k.jsonl.metadata").write_text("abc\n")
    run_dir, _ = init_then_run(tmp_path, hub)
    assert seed_instructions(run_dir) == sorted(QUESTIONS)
    assert sql_rows(run_dir, "SELECT count(*) AS n FROM ingest_errors")[0]["n"] == 0


def test_a_dataset_saved_with_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    records = [{"question": r["question"], "answer": r["answer"]} for r in GSM]
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "ds"))
    run_dir, _ = init_then_run(tmp_path, tmp_path / "ds")
    assert seed_instructions(run_dir) == sorted(QUESTIONS) and kept(run_dir) > 0
    both = datasets.DatasetDict({"train": datasets.Dataset.from_list(records),
                                 "test": datasets.Dataset.from_list([{"question": "Held out?", "answer": "yes"}])})
    both.save_to_disk(str(tmp_path / "dd"))
    config = fake_config_file(tmp_path)
    ran = cli("run", tmp_path / "dd", "--run-dir", tmp_path / "run2", "--config", config)
    assert ran.exit_code == 0 and "only its train split is read, test (1 file) left out" in ran.output, ran.output
    assert seed_instructions(tmp_path / "run2") == sorted(QUESTIONS), "the train split only"
    shutil.rmtree(tmp_path / "dd" / "test")  # removed to save space, still listed in dataset_dict.json
    ran = cli("run", tmp_path / "dd", "--run-dir", tmp_path / "run3", "--config", config, "--quiet")
    assert ran.exit_code == 0 and seed_instructions(tmp_path / "run3") == sorted(QUESTIONS), ran.output


@pytest.mark.parametrize("fmt", ["sharegpt", "messages"])
def test_chats_exported_by_gra_stream_read_back_with_the_same_instructions(tmp_path, fmt):
    config = fake_config_file(tmp_path)
    seeds = write_jsonl(tmp_path / "gsm.jsonl", GSM)
    assert cli("run", seeds, "--run-dir", tmp_path / "first", "--config", config, "--quiet").exit_code == 0
    exported = tmp_path / f"out.{fmt}.json"
    assert cli("export", tmp_path / "first", "--format", fmt, "-o", exported).exit_code == 0
    assert cli("run", exported, "--run-dir", tmp_path / "second", "--config", config, "--quiet").exit_code == 0
    samples = sorted(r["instruction"] for r in sql_rows(tmp_path / "first", "SELECT instruction FROM samples"))
    assert samples and seed_instructions(tmp_path / "second") == samples
