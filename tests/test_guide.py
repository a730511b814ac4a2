from click.testing import CliRunner

from gra_stream.cli import main
from gra_stream.config import load_config
from tests.conftest import corpus


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_init_maps_the_fields_and_writes_a_loadable_config(tmp_path):
    out = tmp_path / "alpaca.toml"
    result = cli("init", corpus("alpaca_en_zh_500"), "-o", out)
    assert result.exit_code == 0 and "instruction=en_instruction input=en_input response=en_output" in result.output
    config = load_config(out)
    assert (config.fields.instruction, config.fields.input, config.fields.response) == ("en_instruction", "en_input", "en_output")
    text = out.read_text()
    assert all(f"#   {name!r}: text" in text for name in ("en_instruction", "instruction", "en_input", "input",
                                                         "en_output", "output")), "each field and what it holds"
    assert cli("init", corpus("gsm8k_train"), "-o", out).exit_code == 1


def test_dry_run_checks_and_shows_prompts_without_writing(tmp_path):
    run_dir = tmp_path / "run"
    result = cli("run", corpus("gsm8k_train"), corpus("humaneval"), "--run-dir", run_dir, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "instruction=question input=- response=answer" in result.output
    assert "instruction=prompt input=- response=canonical_solution" in result.output
    assert result.output.count("--- profile prompt for") == 2 and "Natalia" in result.output
    assert "no model was loaded" in result.output and not run_dir.exists()


def test_dry_run_reports_a_bad_filter(tmp_path):
    (tmp_path / "bad.sql").write_text("SELECT nope FROM batch")
    config = tmp_path / "c.toml"
    config.write_text(f'[filters]\nenabled = ["bad"]\ndirectory = "{tmp_path}"\n')
    result = cli("run", corpus("gsm8k_train"), "--run-dir", tmp_path / "r", "--config", config, "--dry-run")
    assert result.exit_code == 1 and "bad.sql: the filter does not run" in result.output


def test_dry_run_says_when_a_hosted_models_key_is_not_set(tmp_path, monkeypatch):
    """The run would stop before its first request; the dry run says so, and still gives the estimate."""
    config = tmp_path / "hosted.toml"
    config.write_text('[[models]]\nname = "hosted"\nbackend = "openai"\nurl = "https://api.provider.example/v1"\n'
                      'api_model = "qwen-7b"\napi_key_env = "GRA_TEST_UNSET_KEY"\nprice_output = 0.6\n[diversity]\nmodel = "hashing"\n')
    monkeypatch.delenv("GRA_TEST_UNSET_KEY", raising=False)
    result = cli("run", corpus("gsm8k_train"), "--run-dir", tmp_path / "r", "--config", config, "--dry-run")
    assert result.exit_code == 0, result.output
    assert ("keys: model 'hosted': the environment variable GRA_TEST_UNSET_KEY (its API key) is not set: "
            "the run would stop before its first request") in result.output
    assert "calls and" in result.output and "no model was loaded" in result.output
    monkeypatch.setenv("GRA_TEST_UNSET_KEY", "sk-set")
    result = cli("run", corpus("gsm8k_train"), "--run-dir", tmp_path / "r", "--config", config, "--dry-run")
    assert result.exit_code == 0 and "keys: set (GRA_TEST_UNSET_KEY)" in result.output and "sk-set" not in result.output
