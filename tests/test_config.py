import pytest

from gra_stream.config import DEFAULT_CONFIG, Config, load_config
from gra_stream.errors import UserError
from tests.conftest import write_toml


def test_default_config_loads_with_paper_values():
    c = load_config(None)
    assert c.source == str(DEFAULT_CONFIG)
    assert (c.committee.reviewers, c.committee.tau, c.committee.delta) == (3, 8.0, 1.5)
    assert [m.path for m in c.models] == ["embedded:smollm2"]


def test_the_cpu_presets_leave_the_batch_sizes_to_the_measured_defaults():
    """Batch sizes change no result, only speed; a preset that pins one gives its users a slower run. (paper.toml
    sets larger LLM batches for its GPU engines, which the defaults were not measured on.)"""
    defaults = Config()
    for path in (DEFAULT_CONFIG, DEFAULT_CONFIG.parent / "fake.toml"):
        c = load_config(path, backend="fake")
        assert (c.batch_size, c.cpu_batch_size, c.dedup.batch_size) == \
            (defaults.batch_size, defaults.cpu_batch_size, defaults.dedup.batch_size), path.name


def test_backend_override_applies_to_every_model():
    assert {m.backend for m in load_config(None, backend="fake").models} == {"fake"}


@pytest.mark.parametrize("text,message", [
    ("batch_sise = 3", "unknown key batch_sise; did you mean batch_size?"),
    ("zzz = 3", "known keys in the top level: run_seed, batch_size"),
    ("tau = 6.0", "tau is a key of [committee]; write it under its table"),
    ("threshold = 0.5", "threshold is a key of [dedup] and [diversity]"),
    ("[commitee]\ntau = 6.0", "unknown table [commitee]; did you mean [committee]?"),
    ("[zzzz]\nx = 1", "known tables: committee, decontamination"),
    ("batch_size = 'big'", "batch_size = 'big' must be of type int"),
    ("batch_size = -1", "batch_size = -1 must be at least 1 (or 0: by the pool)"),
    ("[committee]\ntau = 11.0", "committee.tau = 11.0 must be between 0 and 10"),
    ("[committee]\nreviewrs = 3", "unknown key committee.reviewrs; did you mean committee.reviewers?"),
    ("[committee]\nzzz = 3", "known keys in [committee]: delta, min_reviews"),
    ("[[models]]\nname = 'm'\napi_modle = 'x'", "did you mean models.api_model?"),
    ("[committee]\nreviewers = 2\nmin_reviews = 3", "committee.min_reviews = 3"),
    ("[dedup]\nbands = 7", "dedup.bands = 7 must divide dedup.num_perm = 120"),
    ("[[models]]\nname = 'm'\nbackend = 'gpt'", "models.backend = 'gpt'"),
    ("[[models]]\nname = 'm'\nbackend = 'openai'\nurl = 'http://x/v1'\nstructured_output = 'xml'",
     "models.structured_output = 'xml' (model 'm') must be one of json_schema, json_object, none"),
    ("[[models]]\nname = 'm'\nbackend = 'fake'\nstructured_output = 'none'", "other than json_schema only for the openai"),
    ("[[models]]\nname = 'm'\nreasoning_effort = 'low'", "models.reasoning_effort = 'low' (model 'm')"),
    ("[[models]]\nname = 'm'\nreasoning_tokens = 500",
     "models.reasoning_tokens = 500 (model 'm') must be 0 or more, and more than 0 only for the openai backend"),
    ("[[models]]\nname = 'm'\nbackend = 'openai'\nurl = 'http://x/v1'\nreasoning_effort = 'minimal'",
     "reasoning models sample at temperature 1 and top_p 1 only; set temperature = 1.0 and top_p = 1.0 (now 0.7 and 0.95)"),
    ("[[models]]\nname = 'm'\nrepetition_penalty = 0.5", "models.repetition_penalty = 0.5 (model 'm') must be between 1 and 2"),
    ("[[models]]\nname = 'm'\npath = '/no/such/model'", "models.path = '/no/such/model'"),
    ("[[models]]\nname = 'm'\n[[models]]\nname = 'm'", "two [[models]] share the name 'm'"),
    ("this is = not toml =", "not valid TOML"),
    ("mode = 'refinement'\nrounds = 5", "rounds = 5 shapes synthesis tasks, and mode = \"refinement\" rewrites each "
     "seed's response once; leave it out, or use mode = \"integrated\""),
    ("mode = 'refinement'\ntasks_per_seed = 2", "tasks_per_seed = 2 shapes synthesis tasks"),
    ("mode = 'refinement'\ntasks_per_round = 100", "tasks_per_round = 100 shapes synthesis tasks"),
])
def test_bad_configs_name_the_file_key_and_fix(tmp_path, text, message):
    path = write_toml(tmp_path / "bad.toml", text)
    with pytest.raises(UserError) as e:
        load_config(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_the_llm_batch_follows_the_pool_unless_set(tmp_path):
    """256 rows where a model runs in an in-process engine (also after `--backend vllm`), 1024 for servers
    and the fake backend (also after `--backend fake` of the embedded default); a set batch_size wins."""
    from gra_stream.stages import all_stages
    assert load_config(None).llm_batch_size == 256
    assert load_config(None, backend="fake").llm_batch_size == 1024
    served = write_toml(tmp_path / "served.toml", "[[models]]\nname = 'm'\nbackend = 'openai'\nurl = 'http://x/v1'\n"
                                                            "api_model = 'm'\n")
    assert load_config(served).llm_batch_size == 1024 and load_config(served, backend="vllm").llm_batch_size == 256
    assert load_config(write_toml(tmp_path / "set.toml", "batch_size = 64"), backend="fake").llm_batch_size == 64
    profile = next(s for s in all_stages() if s.name == "profile")
    assert profile.rows_per_batch(load_config(None, backend="fake")) == 1024


def test_the_seeds_embedding_with_minilm_comes_in_batches_every_worker_can_share(tmp_path):
    """MiniLM takes seconds per hundred seeds: its batches stay small enough for a few thousand seeds to
    reach every worker; the hashing embedder keeps cpu_batch_size, and a smaller cpu_batch_size wins."""
    from gra_stream.stages import all_stages
    embed = next(s for s in all_stages() if s.name == "embed")
    assert embed.rows_per_batch(load_config(None)) == 512
    hashing = write_toml(tmp_path / "h.toml", "[diversity]\nmodel = 'hashing'\n")
    assert embed.rows_per_batch(load_config(hashing)) == 4096
    assert embed.rows_per_batch(load_config(write_toml(tmp_path / "s.toml", "cpu_batch_size = 100"))) == 100


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_int_is_accepted_where_a_float_is_expected(tmp_path):
    assert load_config(write_toml(tmp_path / "c.toml", "[committee]\ntau = 7")).committee.tau == 7.0


def test_paper_config_has_the_papers_pool_and_values():
    c = load_config(DEFAULT_CONFIG.parent / "paper.toml")
    assert [m.path for m in c.models] == ["meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
                                          "internlm/internlm3-8b-instruct", "mistralai/Mistral-7B-Instruct-v0.3",
                                          "allenai/Llama-3.1-Tulu-3-8B"]
    assert (c.committee.reviewers, c.committee.tau, c.committee.delta, c.rounds) == (3, 8.0, 1.5, 5)
    assert c.diversity.threshold == 0.9


def test_fake_backend_swaps_the_embedder_too():
    c = load_config(DEFAULT_CONFIG.parent / "paper.toml", backend="fake")
    assert {m.backend for m in c.models} == {"fake"} and c.diversity.model == "hashing"


def test_default_toml_states_the_built_in_defaults():
    import dataclasses

    from gra_stream.config import config_from_dict

    assert dataclasses.replace(load_config(None), source="") == dataclasses.replace(config_from_dict({}), source="")
