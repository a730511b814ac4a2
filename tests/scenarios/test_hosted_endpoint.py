"""A hosted provider, as far as a loopback server can play one: a bearer token, rate limits with 429 and
Retry-After, replies that do not parse. The run keeps every row, sends the key on every request and never
writes it anywhere; a missing or refused key stops the run with one line."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gra_stream.progress import Progress
from gra_stream.reply_schemas import MAX_TOKENS
from gra_stream.runner import run_pipeline
from gra_stream.store import Store
from tests.conftest import FAKE_POOL, corpus, fake_config, head_jsonl, write_toml
from tests.fault_server import FaultServer
from tests.invariants import check_run

KEY = "sk-test-7f3a9c1e5b"  # a distinctive string: found anywhere on disk, it leaked


def keyed_config(url, **model_extra):
    models = [{"name": m["name"], "backend": "openai", "url": url, "api_model": m["name"], "timeout_s": 2.0,
               "max_in_flight": 8, "max_retries": 6, "api_key_env": "GRA_TEST_KEY",
               "headers": {"X-Title": "GRA_TEST_TITLE"}, **model_extra} for m in FAKE_POOL]
    return fake_config(models=models)


def toml_config(path: Path, url: str, extra: str = "") -> Path:
    return write_toml(path, f"""
[[models]]
name = "hosted"
backend = "openai"
url = "{url}"
api_model = "fake-a"
api_key_env = "GRA_TEST_KEY"
max_retries = 2
timeout_s = 5.0
{extra}
[diversity]
model = "hashing"
""")


def files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def gra(*args, env_key: str | None):
    env = {k: v for k, v in os.environ.items() if k != "GRA_TEST_KEY"}
    if env_key is not None:
        env["GRA_TEST_KEY"] = env_key
    return subprocess.run([sys.executable, "-m", "gra_stream", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def test_a_keyed_rate_limited_flaky_endpoint_loses_nothing_and_keeps_the_key_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("GRA_TEST_KEY", KEY)
    monkeypatch.setenv("GRA_TEST_TITLE", "gra-stream tests")
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 30)
    run_pipeline([seeds], tmp_path / "fake", fake_config(), progress=Progress(quiet=True))
    with FaultServer(slow_s=2.5, api_key=KEY) as server:
        run_pipeline([seeds], tmp_path / "http", keyed_config(server.url), progress=Progress(quiet=True))
    assert server.requests > 0 and server.unauthorized == 0, "every request carried the key"
    assert all(h.get("X-Title") == "gra-stream tests" for h in server.headers_seen)
    assert {"http_429", "garbage"} <= set(server.injected)
    con = Store(tmp_path / "http").connect()
    retries, waited = con.sql("SELECT sum(retries), sum(wait_s) FROM calls").fetchall()[0]
    assert retries >= sum(server.injected.values()) and waited > 0, "retries and Retry-After waits are counted"
    fake = Store(tmp_path / "fake").connect()
    for sql in ("SELECT id, decided_by, score FROM samples ORDER BY id",
                "SELECT id, stage, reason FROM rejections ORDER BY id, stage"):
        assert con.sql(sql).fetchall() == fake.sql(sql).fetchall(), sql
    check_run(tmp_path / "http")
    assert files_containing(tmp_path / "http", KEY) == []


def test_status_shows_waits_and_cost_and_no_key(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 8)
    with FaultServer(faults=False, api_key=KEY, rate_per_s=40) as server:
        config = toml_config(tmp_path / "c.toml", server.url, "price_input = 0.5\nprice_output = 2.0\n")
        run = gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, env_key=KEY)
    assert run.returncode == 0, run.stderr
    status = json.loads(gra("status", tmp_path / "run", "--json", env_key=None).stdout)
    calls = status["calls"]
    expected = sum(c["prompt_tokens"] * 0.5 + c["completion_tokens"] * 2.0 for c in calls) / 1e6
    assert status["cost"]["priced"] and status["cost"]["total"] == pytest.approx(expected) and expected > 0
    samples = status["funnel"]["samples"]
    assert status["cost"]["per_sample"] == (pytest.approx(expected / samples) if samples else None)
    text = gra("status", tmp_path / "run", env_key=None).stdout
    assert "wait s" in text and "per kept sample" in text
    assert KEY not in run.stdout + run.stderr + text
    assert files_containing(tmp_path / "run", KEY) == []


def test_an_unset_key_stops_the_run_before_any_request(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 3)
    with FaultServer(faults=False, api_key=KEY) as server:
        for value in (None, "  "):
            result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config",
                         toml_config(tmp_path / "c.toml", server.url), env_key=value)
            assert result.returncode == 1 and "Traceback" not in result.stderr
            assert result.stderr.strip().splitlines() == [
                "Error: model 'hosted': the environment variable GRA_TEST_KEY (its API key) is not set"]
        assert server.requests == 0
    assert not (tmp_path / "run").exists()


def test_a_refused_key_stops_the_run_with_the_servers_message(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 5)
    wrong = "sk-wrong-0d9e8f7a6b"
    with FaultServer(faults=False, api_key=KEY) as server:
        result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config",
                     toml_config(tmp_path / "c.toml", server.url), env_key=wrong)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "refused the request (HTTP 401): Incorrect API key provided: ***." in line
    assert server.requests <= 8, "not retried: at most the requests already in flight"
    assert wrong not in result.stdout + result.stderr and files_containing(tmp_path / "run", wrong) == []
    assert Store(tmp_path / "run").connect().sql("SELECT count(*) FROM quarantine").fetchall()[0][0] == 0


def test_an_endpoint_that_cannot_serve_stops_the_run_and_the_same_command_resumes(tmp_path):
    """A server that is gone (connections refused), then a gateway answering 503 to everything, then one
    answering HTTP 200 with an error for a body: each stops the run with one line (the gateway's words
    in it) instead of quarantining every row, and once the endpoint answers, the same command finishes
    with nothing lost."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 8)
    with FaultServer(faults=False) as server:
        url, port = server.url, server.httpd.server_address[1]
    args = ("run", seeds, "--run-dir", tmp_path / "run", "--config", toml_config(tmp_path / "c.toml", url))
    stopped = [gra(*args, env_key=KEY)]
    with FaultServer(faults=False, port=port) as server:
        server.down = True
        stopped.append(gra(*args, env_key=KEY))
        assert server.requests > 0
        server.down, server.error_200 = False, "Upstream provider timed out"
        stopped.append(gra(*args, env_key=KEY))
        server.error_200 = ""
        resumed = gra(*args, env_key=KEY)
    for result, says in zip(stopped, ("cannot connect to", "no reply from", "no reply from")):
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
        line = result.stderr.strip().splitlines()[-1]
        assert says in line and "run the same command again once the endpoint answers" in line, line
        # said when it happens too, for the passes in flight (a CPU stage's batch) can take minutes to stop
        assert f"stopping once the batches in flight are committed: model 'hosted': {says}" in result.stderr
    assert "(gave up after 2 retries: HTTP 503)" in stopped[1].stderr
    assert "(gave up after 2 retries: not a chat completion: Upstream provider timed out)" in stopped[2].stderr
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    con = Store(tmp_path / "run").connect()
    assert con.sql("SELECT count(*) FROM quarantine").fetchall() == [(0,)]
    assert con.sql("SELECT count(*) FROM profiles WHERE status = 'ok'").fetchall() == [(8,)]
    check_run(tmp_path / "run")


def test_a_url_without_its_v1_stops_the_run_at_the_first_404(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 5)
    with FaultServer(faults=False) as server:
        result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config",
                     toml_config(tmp_path / "c.toml", server.url.removesuffix("/v1")), env_key=KEY)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "answered HTTP 404 for model 'fake-a' (no route /chat/completions)" in line and "/v1" in line, line
    assert Store(tmp_path / "run").connect().sql("SELECT count(*) FROM quarantine").fetchall() == [(0,)]


def test_an_azure_deployment_url_keeps_its_api_version_and_takes_the_key_as_api_key(tmp_path):
    """Azure OpenAI names the deployment in the path, wants `?api-version=` after /chat/completions and the
    key in an `api-key` header: the query stays at the end of the URL, and the run is served."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 5)
    route = "/openai/deployments/fake-a/chat/completions?api-version=2024-10-21"
    with FaultServer(faults=False, api_key=KEY, key_header="api-key", route=route) as server:
        base = server.url.removesuffix("/v1") + "/openai/deployments/fake-a?api-version=2024-10-21"
        config = write_toml(tmp_path / "azure.toml", f"""
[[models]]
name = "azure"
backend = "openai"
url = "{base}"
api_model = "fake-a"
headers = {{ "api-key" = "GRA_TEST_KEY" }}
max_retries = 2
[diversity]
model = "hashing"
""")
        result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, env_key=KEY)
    assert result.returncode == 0, result.stderr[-2000:]
    assert server.requests > 0 and server.unauthorized == 0
    con = Store(tmp_path / "run").connect()
    assert con.sql("SELECT count(*) FROM profiles WHERE status = 'ok'").fetchall() == [(5,)]
    assert con.sql("SELECT count(*) FROM quarantine").fetchall() == [(0,)]
    assert files_containing(tmp_path / "run", KEY) == []


def test_an_endpoint_that_rejects_every_request_stops_the_run_and_one_rejected_row_is_quarantined(tmp_path):
    """A provider without JSON-schema outputs answers HTTP 400 to every request: the run stops with its
    message, where it quarantined every row as a parse error and exited 0. A request rejected among others
    (a prompt over the context length) is that row's: it is quarantined, with the server's words."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 6)
    no_schemas = "'response_format.type' json_schema is not supported by this model"
    with FaultServer(faults=False, reject=lambda body: no_schemas if "response_format" in body else None) as server:
        result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config",
                     toml_config(tmp_path / "c.toml", server.url), env_key=KEY)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert f"model 'hosted': {server.url} rejected all 6 requests of a batch (HTTP 400: {no_schemas})" \
        in line and "the same command resumes" in line and 'structured_output = "json_object"' in line, line
    con = Store(tmp_path / "run").connect()
    assert con.sql("SELECT count(*) FROM quarantine").fetchall() == [(0,)]
    assert con.sql("SELECT count(*) FROM profiles").fetchall() == [(0,)]

    long = [json.loads(line)["question"] for line in seeds.read_text().splitlines()[:2]]
    too_long = "This model's maximum context length is 2048 tokens; your request has 2311"

    def reject(body):  # two in a batch: their re-asks make a batch of rejected requests, theirs, not the config's
        return too_long if any(q in json.dumps(body) for q in long) else None

    with FaultServer(faults=False, reject=reject) as server:
        result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config",
                     toml_config(tmp_path / "c.toml", server.url), env_key=KEY)
    assert result.returncode == 0, result.stderr[-2000:]
    con = Store(tmp_path / "run").connect()
    rows = con.sql("SELECT q.stage, q.error, s.instruction FROM quarantine q LEFT JOIN seeds s USING (id)").fetchall()
    for question in long:
        assert ("profile", f"no reply: rejected: HTTP 400: {too_long}", question) in rows, rows
    assert all(error.endswith(too_long) for _, error, _ in rows), "only the requests that were too long failed"
    assert con.sql("SELECT count(*) FROM profiles WHERE status = 'ok'").fetchall() == [(4,)]
    check_run(tmp_path / "run")


@pytest.mark.parametrize("mode", ["json_object", "none"])
def test_a_provider_without_json_schema_outputs_serves_with_the_schema_in_the_prompt(tmp_path, mode):
    """`structured_output`: JSON mode, or no response_format at all, with the reply schema at the end of
    the prompt; replies are checked against it as always. Another mode is another model's replies: its
    calls are not the cached calls of the default mode, and its stages are recomputed."""
    from gra_stream.backends import ChatRequest
    from gra_stream.backends.openai_http import SCHEMA_IN_PROMPT
    from gra_stream.call_cache import call_key
    from gra_stream.config import load_config
    from gra_stream.stage_versions import inputs, versions

    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 6)

    def no_schemas(body):
        return "json_schema is not supported" if (body.get("response_format") or {}).get("type") == "json_schema" else None

    config = toml_config(tmp_path / "c.toml", "URL", f'structured_output = "{mode}"')
    with FaultServer(faults=False, reject=no_schemas) as server:
        config.write_text(config.read_text().replace("URL", server.url))
        result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, env_key=KEY)
    assert result.returncode == 0, result.stderr[-2000:]
    bodies = [json.loads(b) for b in server.bodies]
    assert bodies and all(b.get("response_format") == ({"type": "json_object"} if mode == "json_object" else None)
                          for b in bodies)
    assert all(SCHEMA_IN_PROMPT in b["messages"][-1]["content"] for b in bodies)
    con = Store(tmp_path / "run").connect()
    assert con.sql("SELECT count(*) FROM profiles WHERE status = 'ok'").fetchall() == [(6,)]
    assert con.sql("SELECT count(*) FROM reviews").fetchall()[0][0] > 0
    check_run(tmp_path / "run")

    default = load_config(toml_config(tmp_path / "d.toml", server.url))
    assert versions(load_config(config))["profile"] != versions(default)["profile"]
    request = ChatRequest(({"role": "user", "content": "Say 1."},), {"type": "object"}, 16, 0.7, 0.95, 1)
    assert call_key(load_config(config).models[0], request) != call_key(default.models[0], request)
    # the default is not a part of a version, so that tables made before the setting existed keep theirs
    assert "structured_output" not in inputs(default)["profile"]["models"][0]


def test_a_refusal_is_quarantined_with_the_models_words(tmp_path):
    """A provider's refusal comes as `refusal` with no content: the row is re-asked, then quarantined with
    the refusal as its raw reply, so that `quarantine` says why; the other rows go on."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 6)
    question = json.loads(seeds.read_text().splitlines()[0])["question"]
    words = "I'm sorry, but I can't help with that."
    with FaultServer(faults=False, refuse=lambda body: words if question in json.dumps(body) else None) as server:
        result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config",
                     toml_config(tmp_path / "c.toml", server.url), env_key=KEY)
    assert result.returncode == 0, result.stderr[-2000:]
    con = Store(tmp_path / "run").connect()
    rows = con.sql("SELECT q.stage, q.raw, s.instruction FROM quarantine q JOIN seeds s USING (id)").fetchall()
    assert rows == [("profile", words, question)], rows
    assert con.sql("SELECT count(*) FROM profiles WHERE status = 'ok'").fetchall() == [(5,)]
    check_run(tmp_path / "run")


def like_a_reasoning_model(body: dict) -> str | None:
    """What OpenAI's reasoning models (o-series, gpt-5) answer a request with parameters they refuse."""
    if "max_tokens" in body:
        return "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
    if body.get("temperature", 1) != 1:
        return (f"Unsupported value: 'temperature' does not support {body['temperature']} with this model. "
                f"Only the default (1) value is supported.")
    if "top_p" in body:
        return "Unsupported parameter: 'top_p' is not supported with this model."
    return None


def test_a_reasoning_model_is_asked_with_max_completion_tokens_and_no_sampling_settings(tmp_path):
    """An OpenAI reasoning model refuses `max_tokens`, `temperature` and `top_p`: with the default request
    the run stops at its first batch with the provider's words and the key that fixes it; with
    `reasoning_effort` it is asked with `max_completion_tokens` and that effort, and serves the run. The
    effort is a part of the model's replies: of the profile's version and of the call cache's key."""
    from gra_stream.backends import ChatRequest
    from gra_stream.call_cache import call_key
    from gra_stream.config import load_config
    from gra_stream.stage_versions import inputs, versions

    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 6)
    with FaultServer(faults=False, reject=like_a_reasoning_model) as server:
        plain = toml_config(tmp_path / "plain.toml", server.url)
        result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config", plain, env_key=KEY)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert "Use 'max_completion_tokens' instead." in line and "reasoning_effort" in line, line

        config = toml_config(tmp_path / "c.toml", server.url,
                             'reasoning_effort = "minimal"\nreasoning_tokens = 100\ntemperature = 1.0\ntop_p = 1.0')
        before = len(server.bodies)
        result = gra("run", seeds, "--run-dir", tmp_path / "run", "--config", config, env_key=KEY)
    assert result.returncode == 0, result.stderr[-2000:]
    bodies = [json.loads(b) for b in server.bodies[before:]]
    assert bodies and all(b["reasoning_effort"] == "minimal" for b in bodies)
    # each role's budget and the tokens for reasoning on top (the fake server keeps replies within the budget)
    assert {b["max_completion_tokens"] for b in bodies} <= {budget + 100 for budget in MAX_TOKENS.values()}
    assert MAX_TOKENS["profile"] + 100 in {b["max_completion_tokens"] for b in bodies}
    assert not any({"max_tokens", "temperature", "top_p"} & set(b) for b in bodies)
    con = Store(tmp_path / "run").connect()
    assert con.sql("SELECT count(*) FROM profiles WHERE status = 'ok'").fetchall() == [(6,)]
    assert con.sql("SELECT count(*) FROM reviews").fetchall()[0][0] > 0
    check_run(tmp_path / "run")

    effort, default = load_config(config), load_config(plain)
    assert versions(effort)["profile"] != versions(default)["profile"]
    request = ChatRequest(({"role": "user", "content": "Say 1."},), {"type": "object"}, 16, 1.0, 1.0, 1)
    assert call_key(effort.models[0], request) != call_key(default.models[0], request)
    assert "reasoning_effort" not in inputs(default)["profile"]["models"][0]


CHATTY = ("<think>\nThe schema wants {{domain}} first.\n</think>\n\n{}", "Here is the JSON:\n```json\n{}\n```",
          "```JSON\n{}\n```\nHope this helps!", "Sure, here it is: {} Let me know if you need more.", "{}")


def chatty(text: str, n: int) -> str:
    """A JSON reply as a chatty model words it; what the fake backend garbles on purpose stays as it is (its
    re-ask repeats it, so it must be the same text in both runs)."""
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return text
    return CHATTY[n % len(CHATTY)].format(text)


def test_replies_wrapped_in_reasoning_fences_or_prose_are_read_as_the_same_replies_unwrapped(tmp_path):
    """Models asked without a JSON-schema output wrap their JSON (a <think> block, a fence, a sentence
    around it): each wrapped reply is read as the object inside it, so the run's decisions are those of
    the same replies unwrapped."""
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 6)
    config = toml_config(tmp_path / "c.toml", "URL", 'structured_output = "none"')
    decisions = {}
    for name, wrap in (("plain", None), ("chatty", chatty)):
        with FaultServer(faults=False, wrap=wrap) as server:
            run_config = tmp_path / f"{name}.toml"
            run_config.write_text(config.read_text().replace("URL", server.url))
            result = gra("run", seeds, "--run-dir", tmp_path / name, "--config", run_config, env_key=KEY)
        assert result.returncode == 0, result.stderr[-2000:]
        con = Store(tmp_path / name).connect()
        decisions[name] = {}
        for table in ("profiles", "generations", "reviews", "verdicts", "samples"):
            columns = [c for c in con.sql(f"SELECT * FROM {table}").columns if c not in ("raw", "latency_s", "wait_s")]
            decisions[name][table] = con.sql(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id").fetchall()
        assert con.sql("SELECT count(*) FROM reviews WHERE status = 'ok'").fetchall()[0][0] > 0
    assert decisions["chatty"] == decisions["plain"]


def test_a_requests_per_minute_budget_holds_requests_back_and_counts_the_wait():
    from gra_stream.backends import ChatRequest
    from gra_stream.backends.openai_http import OpenAIBackend
    from gra_stream.config import ModelSpec

    requests = [ChatRequest(({"role": "user", "content": f"Say {i}."},), None, 16, 0.7, 0.95, i) for i in range(63)]
    with FaultServer(faults=False) as server:
        backend = OpenAIBackend(ModelSpec(name="m", backend="openai", url=server.url, api_model="fake-a",
                                          requests_per_minute=60, max_in_flight=64))
        started = time.monotonic()
        done = backend.complete(requests)
        elapsed = time.monotonic() - started
        backend.close()
    assert all(c.finish_reason == "stop" for c in done)
    # a minute's budget at once, then one a second: the last three wait about 1, 2 and 3 seconds
    assert elapsed >= 2.5 and sum(c.wait_s for c in done) >= 5.0
