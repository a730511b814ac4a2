import json

import pytest

from hypothesis import given, strategies as st

from gra_stream.backends import ChatRequest, Completion
from gra_stream.backends.pool import ModelPool
from gra_stream.backends.scripted import Scripted
import polars as pl

from gra_stream.llm import Calls, ask, parse_reply, schema_error
from gra_stream.prompts import clip, clip_column, render, render_column
from gra_stream.reply_schemas import REVIEW
from tests.conftest import fake_config


GOOD = {"reasonable": True, "complete": True, "clear": False, "correctness": 7, "clarity": 8, "completeness": 9,
        "relevance": 10, "coherence": 6, "ethics": 10, "strengths": "short", "weaknesses": "none"}


def pool_with(backend):
    return ModelPool(fake_config(), backends={"fake-a": backend})


def calls(seed=1):
    return Calls(["fake-a"], ["review this"], [seed], "sys", REVIEW, 100)


def test_render_fills_slots_once_so_text_is_never_template():
    text = render("A={{a}} B={{b}}", {"a": "{{b}}", "b": "$x {0} %s"})
    assert text == "A={{b}} B=$x {0} %s"


def test_schema_errors_are_specific():
    assert schema_error({**GOOD, "clarity": 11}, REVIEW) == "reply.clarity must be smaller than or equal to 10"
    assert schema_error({**GOOD, "clear": "yes"}, REVIEW) == "reply.clear must be boolean"
    assert schema_error({k: v for k, v in GOOD.items() if k != "ethics"}, REVIEW) == "reply must contain ['ethics'] properties"
    assert schema_error(GOOD, REVIEW) == ""
    assert parse_reply("```json\n" + json.dumps(GOOD) + "\n```", REVIEW)[0] == GOOD


@pytest.mark.parametrize("wrapped", ["<think>\nIt wants {scores}.\n</think>\n{}", "Here you go:\n```json\n{}\n```\nDone.",
                                     "```JSON\n{}```", "The review: {} (all scores out of 10)", "  {}\n"])
def test_a_reply_is_read_from_the_object_it_wraps(wrapped):
    assert parse_reply(wrapped.replace("{}", json.dumps(GOOD)), REVIEW) == (GOOD, "")


@pytest.mark.parametrize("reply,error", [("Sure! Here is the answer.", "not valid JSON (Expecting value at char 0)"),
                                         ('{"oops": ', "not valid JSON (Expecting value at char 8)"),
                                         ("```json\nnot json\n```", "not valid JSON (Expecting value at char 0)"),
                                         ("Code: `f() {}` and {bad}", "not valid JSON (Expecting value at char 0)")])
def test_a_reply_whose_wrapped_object_does_not_parse_gets_its_own_error(reply, error):
    assert parse_reply(reply, REVIEW) == (None, error)


def test_a_bad_reply_is_reasked_with_the_error_then_kept():
    backend = Scripted(["not json", json.dumps(GOOD)])
    reply = ask(pool_with(backend), calls(), max_reasks=1)
    assert reply.data == [GOOD] and reply.attempts == [2]
    assert reply.prompt_tokens == [20] and reply.completion_tokens == [10]
    second = backend.history[1]
    assert "not valid JSON" in second.messages[-1]["content"] and second.messages[-2]["content"] == "not json"
    assert second.seed == backend.history[0].seed + 1
    assert reply.call_columns(["fake-a"])["status"] == ["ok"]


def test_a_reply_that_never_parses_is_quarantined_with_raw_text():
    backend = Scripted(["nope", json.dumps({**GOOD, "ethics": -1})])
    reply = ask(pool_with(backend), calls(), max_reasks=1)
    assert reply.data == [None] and reply.raw == [json.dumps({**GOOD, "ethics": -1})] and reply.error[0] == "reply.ethics must be bigger than or equal to 0"
    columns = reply.call_columns(["fake-a"])
    assert columns["status"] == ["quarantined"] and columns["raw"] == reply.raw


def test_a_cut_reply_says_so():
    class Cut(Scripted):
        def complete(self, requests):
            self.history.extend(requests)
            return [Completion(self.replies.pop(0), 10, 100, "length") for _ in requests]

    reply = ask(pool_with(Cut(['{"reasonable": tr'])), calls(), max_reasks=0)
    assert reply.truncated == [True] and reply.error[0].startswith("reply cut at max_tokens (100): not valid JSON")


def test_replies_come_back_in_call_order_across_models():
    pool = ModelPool(fake_config())
    models = ["fake-b", "fake-a", "fake-b", "fake-c"]
    batch = Calls(models, [f"q{i}" for i in range(4)], list(range(4)), "s", REVIEW, 200)
    replies = ask(pool, batch, max_reasks=2)
    again = [ask(pool, Calls([m], [f"q{i}"], [i], "s", REVIEW, 200), max_reasks=2).raw[0] for i, m in enumerate(models)]
    assert replies.raw == again


@given(st.text(max_size=40), st.text(max_size=40), st.integers(0, 30))
def test_templates_render_the_same_per_row_and_as_columns(a, b, limit):
    """Stages render prompts as Polars columns; `render` and `clip` are the reference for one row."""
    template = "A={{a}}\n{{b}}! {{a}}"
    rows = pl.DataFrame({"a": [a], "b": [b]})
    column = rows.select(render_column(template, {"a": clip_column(pl.col("a"), limit), "b": pl.col("b")}))
    assert column.item() == render(template, {"a": clip(a, limit), "b": b})


def test_the_fake_backend_keeps_requests_only_when_asked_to():
    """A run sends millions of requests through the fake backend: it must not hold on to them."""
    from gra_stream.backends.fake import FakeBackend

    request = ChatRequest(({"role": "user", "content": "hello there"},), REVIEW, 100, 0.7, 1.0, 1)
    quiet, recording = FakeBackend("fake-a"), FakeBackend("fake-a", record=True)
    assert quiet.complete([request] * 3) == recording.complete([request] * 3)
    assert quiet.history == [] and recording.history == [request] * 3


@given(st.lists(st.text(alphabet=st.sampled_from("aZq-- \n\t.'_1éKİß\u212a\ud800") | st.characters(), max_size=12)
                | st.sampled_from(["photosynthesis", "Tomatoes", "the", "-dash-word", "x" * 40]), max_size=90))
def test_the_fake_backend_finds_the_content_words_its_docstring_names(parts):
    """Words are found on bytes for speed; they must be exactly the regex's, over the text's first WINDOW
    words (cut at WINDOW_CHARS characters): ASCII runs of letters and hyphens that start with a letter,
    4 characters or more, lower-cased, less the templates' words; the 12 longest, ties alphabetical."""
    import re

    from gra_stream.backends.fake import _TEMPLATE_WORDS, WINDOW, WINDOW_CHARS, _words

    text = " ".join(parts)
    blanked = re.sub(r"[^A-Za-z-]", " ", text[:WINDOW_CHARS].encode("ascii", "replace").decode())
    tokens = [re.sub(r"^-+", "", t) for t in blanked.split()]
    tokens = [t for t in tokens if t][:WINDOW + 1]
    if len(tokens) > WINDOW or (len(text) > WINDOW_CHARS and tokens):
        tokens.pop()
    words = {t.lower() for t in tokens if re.fullmatch(r"[A-Za-z][A-Za-z-]{3,}", t)} - _TEMPLATE_WORDS
    want = tuple(sorted(sorted(words), key=len, reverse=True)[:12]) or ("topic", "example", "detail")
    assert _words.__wrapped__(text) == want


def test_a_fake_reply_depends_on_its_request_alone_not_on_its_batch():
    """The fake backend draws its numbers for a whole batch at once; each reply is still the same whatever
    else is in the batch, and replies differ with the seed, the prompt and the model."""
    from gra_stream.backends.fake import FakeBackend

    requests = [ChatRequest(({"role": "system", "content": "s"}, {"role": "user", "content": f"Describe volcano number {i}"}),
                            REVIEW, 400, 0.7, 1.0, i % 3) for i in range(40)]
    backend = FakeBackend("fake-a")
    together = backend.complete(requests)
    assert together == [backend.complete([r])[0] for r in requests]
    assert together[::-1] == backend.complete(requests[::-1])
    assert len({c.text for c in together}) > 30
    assert FakeBackend("fake-b").complete(requests) != together
