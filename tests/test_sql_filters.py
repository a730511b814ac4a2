import re

import polars as pl
import pytest

from gra_stream.errors import UserError
from gra_stream.sql_filters import apply_filters, load_filters
from tests.conftest import fake_config


def batch(rows):
    base = {"seed_id": "s", "domain": "math"}
    return pl.DataFrame([{**base, **r} for r in rows])


ROWS = [
    {"id": "ok", "instruction": "Explain why the sky is blue.", "response": "Sunlight scatters off air molecules, blue the most."},
    {"id": "short", "instruction": "Hi?", "response": "Hello there, how can I help you today?"},
    {"id": "terse", "instruction": "Explain why the sky is blue.", "response": "Because."},
    {"id": "long", "instruction": "Explain why the sky is blue.", "response": "x" * 9000},
    {"id": "refuse", "instruction": "Explain why the sky is blue.", "response": "I'm sorry, but I cannot help with that."},
    {"id": "copy", "instruction": "Explain why the sky is blue to a child.", "response": "Explain why the sky is blue to a child."},
    {"id": "inject", "instruction": "'; DROP TABLE batch; --", "response": "$min_response_chars {{instruction}} ok fine yes"},
]


def test_bundled_filters_drop_with_named_reasons():
    drops = apply_filters(load_filters(fake_config()), batch(ROWS))
    assert {k: v[0] for k, v in drops.items()} == {
        "short": "too_short", "terse": "too_short", "long": "too_long", "refuse": "refusal", "copy": "copies_instruction"}
    assert "9000" in drops["long"][1]


def test_filter_parameters_come_from_the_config():
    config = fake_config(filters={"enabled": ["min_length"], "min_length": {"min_response_chars": 60}})
    drops = apply_filters(load_filters(config), batch(ROWS))
    assert "ok" in drops and "long" not in drops


@pytest.mark.parametrize("sql,message", [
    ("SELEC id FROM batch", "the filter does not run"),
    ("SELECT id, 'r' AS reason FROM batch", "must select exactly (id, reason, detail)"),
    ("SELECT id, 'r' AS reason, '' AS detail FROM no_such_table", "the filter does not run"),
    ("SELECT id, 'r' AS reason, '' AS detail FROM batch WHERE length(respons) < 5", 'Candidate bindings: "response"'),
])
def test_broken_filters_are_clear_errors(tmp_path, sql, message):
    (tmp_path / "mine.sql").write_text(sql)
    config = fake_config(filters={"enabled": ["mine"], "directory": str(tmp_path)})
    with pytest.raises(UserError) as e:
        load_filters(config)
    assert message in str(e.value) and "mine.sql" in str(e.value)


def test_missing_filter_and_unknown_parameter(tmp_path):
    with pytest.raises(UserError, match="no nope.sql exists"):
        load_filters(fake_config(filters={"enabled": ["nope"]}))
    with pytest.raises(UserError, match="filters.min_length.min_chars is not a parameter"):
        load_filters(fake_config(filters={"enabled": ["min_length"], "min_length": {"min_chars": 3}}))
    with pytest.raises(UserError, match="must be int"):
        load_filters(fake_config(filters={"enabled": ["min_length"], "min_length": {"min_response_chars": "3"}}))


def test_the_overlap_filter_measures_word_set_jaccard():
    pairs = [("Explain the sky to a child.", "Explain the sky to a child, please."),
             ("Name three red fruits", "Strawberries, cherries and red apples are red fruits."),
             ("", ""), ("a a a b", "b b a"), ("Sort a list in Python.", "sort A LIST, in python!"),
             ("Why?", "Why not?"), ("x", "y")]
    rows = [{"id": f"p{n}", "instruction": i, "response": r} for n, (i, r) in enumerate(pairs)]
    config = fake_config(filters={"enabled": ["overlap"], "overlap": {"max_overlap": 0.5}})
    drops = apply_filters(load_filters(config), batch(rows))

    def jaccard(i, r):
        words = [set(re.split(r"\W+", t.strip().lower())) for t in (i, r)]
        return len(words[0] & words[1]) / len(words[0] | words[1])

    assert set(drops) == {f"p{n}" for n, (i, r) in enumerate(pairs) if jaccard(i, r) > 0.5}
    assert {k: v[1] for k, v in drops.items()} == {
        k: f"word overlap {jaccard(*pairs[int(k[1:])]):.2f}" for k in drops}
