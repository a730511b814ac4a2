"""The OpenAI-compatible HTTP backend: against a local server that injects faults, and (slow) against a
real `vllm serve` on loopback with the embedded model."""

import json

import pytest

from gra_stream import reply_schemas
from gra_stream.backends import ChatRequest
from gra_stream.backends.openai_http import OpenAIBackend
from gra_stream.config import load_config
from gra_stream.progress import Progress
from gra_stream.runner import run_pipeline
from gra_stream.store import Store
from tests.conftest import FAKE_POOL, fake_config, free_port, gra, head_jsonl, corpus, sql_rows, write_toml
from tests.fault_server import FaultServer
from tests.invariants import check_run


def http_config(url, **extra):
    models = [{"name": m["name"], "backend": "openai", "url": url, "api_model": m["name"], "timeout_s": 2.0,
               "max_in_flight": 8, "max_retries": 6} for m in FAKE_POOL]
    return fake_config(models=models, **extra)


def table(run_dir, sql):
    return Store(run_dir).connect().sql(sql).fetchall()


def test_faults_are_retried_counted_and_lose_nothing(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 40)
    run_pipeline([seeds], tmp_path / "fake", fake_config(), progress=Progress(quiet=True))
    with FaultServer(slow_s=2.5) as server:
        run_pipeline([seeds], tmp_path / "http", http_config(server.url), progress=Progress(quiet=True))
    assert set(server.injected) == {"http_500", "http_429", "garbage", "slow"}
    retried = table(tmp_path / "http", "SELECT sum(retries) FROM calls")[0][0]
    # every injected fault cost one retry; a loaded machine may add genuine timeouts on top
    assert retried >= sum(server.injected.values())
    for sql in ("SELECT id, decided_by, score FROM samples ORDER BY id",
                "SELECT id, stage, reason FROM rejections ORDER BY id, stage",
                "SELECT id, mean, status FROM reviews ORDER BY id"):
        assert table(tmp_path / "http", sql) == table(tmp_path / "fake", sql), sql
    check_run(tmp_path / "http")


def test_a_dead_endpoint_stops_the_run_and_quarantines_nothing(tmp_path):
    """Quarantining every row of a server that is down would lose them: a re-run finds them done. The run
    stops instead, with the rows pending (tests/scenarios/test_hosted_endpoint.py resumes such a run)."""
    from gra_stream.errors import UserError

    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 5)
    port = free_port()  # nothing listens there once the probing socket is closed
    config = fake_config(models=[{"name": "dead", "backend": "openai", "url": f"http://127.0.0.1:{port}/v1",
                                  "api_model": "dead", "max_retries": 1, "timeout_s": 1.0}], max_reasks=0)
    with pytest.raises(UserError, match=r"model 'dead': cannot connect to .* \(ConnectError, 1 retries\)"):
        run_pipeline([seeds], tmp_path / "run", config, progress=Progress(quiet=True))
    assert table(tmp_path / "run", "SELECT count(*) FROM profiles")[0][0] == 0
    assert table(tmp_path / "run", "SELECT count(*) FROM quarantine")[0][0] == 0


def test_openai_url_is_validated(tmp_path):
    from gra_stream.errors import UserError

    with pytest.raises(UserError, match="must be an http"):
        fake_config(models=[{"name": "m", "backend": "openai", "url": "localhost:8000"}])
    # without api_model (nor a path) the request would name the embedded default, which no server serves
    with pytest.raises(UserError, match="model 'm' \\(backend openai\\) has no api_model: set it to the name"):
        fake_config(models=[{"name": "m", "backend": "openai", "url": "https://api.openai.com/v1"}])
    assert fake_config(models=[{"name": "m", "backend": "openai", "url": "https://api.openai.com/v1",
                                "path": "Qwen/Qwen2.5-7B-Instruct"}]).models[0].path == "Qwen/Qwen2.5-7B-Instruct"


@pytest.mark.slow
def test_a_real_vllm_server_on_loopback(tmp_path):
    from benchmarks.vllm_server import vllm_server

    with vllm_server(tmp_path / "server.log", kv_cache_gib=1, start_s=600) as url:
        seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 3)
        config = write_toml(tmp_path / "http.toml", f"""
[[models]]
name = "smollm2"
backend = "openai"
url = "{url}/v1"
api_model = "smollm2"
repetition_penalty = 1.1
""")
        gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, "--quiet", timeout=1800)
        profiles = sql_rows(tmp_path / "run", "SELECT status, domain, keywords, prompt_tokens, completion_tokens FROM profiles")
        assert len(profiles) == 3 and any(p["status"] == "ok" for p in profiles)
        for p in profiles:
            assert p["prompt_tokens"] > 0 and p["completion_tokens"] > 0
            if p["status"] == "ok":
                assert len(p["keywords"]) == 3
        check_run(tmp_path / "run")
        for mode in ("json_object", "none"):  # for providers without JSON-schema outputs (docs/backends.md)
            check_structured_output(url, mode, tmp_path)


def check_structured_output(url: str, mode: str, tmp_path) -> None:
    """The real server takes the mode's request body: no request is rejected, each is answered, and in JSON
    mode a reply that was not cut short is a JSON object."""
    config = load_config(write_toml(tmp_path / f"{mode}.toml", f"""
[[models]]
name = "smollm2"
backend = "openai"
url = "{url}/v1"
api_model = "smollm2"
structured_output = "{mode}"
"""))
    backend = OpenAIBackend(config.models[0])
    try:
        asked = [ChatRequest(({"role": "user", "content": f"Profile this task: add {n} and {n + 1}."},),
                             reply_schemas.PROFILE, 96, 0.7, 1.0, n) for n in range(3)]
        replies = backend.complete(asked)
    finally:
        backend.close()
    for reply in replies:
        assert not reply.error and reply.completion_tokens > 0, (mode, reply)
        if mode == "json_object" and reply.finish_reason == "stop":
            assert isinstance(json.loads(reply.text), dict), reply.text


def test_finished_calls_are_replayed_from_the_call_cache(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 20)
    run_dir = tmp_path / "run"
    with FaultServer(faults=False) as server:
        run_pipeline([seeds], run_dir, http_config(server.url), progress=Progress(quiet=True))
        first = server.requests
        before = table(run_dir, "SELECT id, mean, status FROM reviews ORDER BY id")
        # lose everything from the review stage on, as a crash inside those batches would
        for folder in ("reviews", "verdicts", "adjudications", "diversity", "annotations", "samples"):
            for segment in (run_dir / folder).glob("*.parquet"):
                if segment.name != "_empty.parquet":
                    segment.unlink()
        run_pipeline([seeds], run_dir, http_config(server.url), progress=Progress(quiet=True))
        assert server.requests == first, "every redone call should have come from the cache"
    assert table(run_dir, "SELECT id, mean, status FROM reviews ORDER BY id") == before
    assert table(run_dir, "SELECT count(DISTINCT key) FROM call_cache")[0][0] == first


def test_a_reply_body_is_read_or_called_malformed():
    """A chat completion's content, or its refusal where it has none; a body that is not a chat completion
    is None (retried as a transport error)."""
    from gra_stream.backends.openai_http import _parse

    def text(body: dict):
        done = _parse(json.dumps(body).encode(), 0.1, 0, 0.0)
        return done and done.text

    assert text({"choices": [{"message": {"content": "{}"}}]}) == "{}"
    assert text({"choices": [{"message": {"content": None, "refusal": "I can't help with that."}}]}) == \
        "I can't help with that."
    assert text({"choices": [{"message": {"content": None}, "finish_reason": "length"}]}) == ""
    for garbage in ({"choices": [{"message": "hi"}]}, {"choices": []}, {"error": "boom"}, ["hi"]):
        assert text(garbage) is None, garbage
