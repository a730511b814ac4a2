import pytest
from hypothesis import given, strategies as st

from gra_stream.config import Fields
from gra_stream.errors import UserError
from gra_stream.fields import MAX_FIELD_CHARS, extract, resolve_mapping
from tests.conftest import corpus, read_jsonl


@pytest.mark.parametrize("name,expected", [
    ("alpaca_en_zh_500", ("en_instruction", "en_input", "en_output")),
    ("gsm8k_train", ("question", "", "answer")),
    ("code_alpaca_2k", ("instruction", "input", "output")),
    ("self_instruct_seed_tasks", ("instruction", "instances.0.input", "instances.0.output")),
    ("humaneval", ("prompt", "", "canonical_solution")),
])
def test_real_corpora_map_by_default(name, expected, tmp_path):
    record = read_jsonl(corpus(name), 1)[0]
    mapping = resolve_mapping(record, Fields(), tmp_path / name)
    assert (mapping.instruction, mapping.input, mapping.response) == expected
    texts, reason = extract(record, mapping)
    assert reason == "" and texts[0] and texts[2]


@pytest.mark.parametrize("record,expected", [
    ({"user": "Say hi.", "assistant": "Hi!"}, ("user", "", "assistant", "")),
    ({"human": "Say hi.", "assistant": "Hi!"}, ("human", "", "assistant", "")),
    # a preference set whose chosen reply is a conversation (UltraFeedback's binarized layout, without messages)
    ({"prompt": "Say hi.", "chosen": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}],
      "rejected": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "No."}]}, ("", "", "", "chosen")),
    ({"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}, ("prompt", "", "chosen", "")),
])
def test_common_layouts_map_by_name(record, expected):
    mapping = resolve_mapping(record, Fields(), None)
    assert (mapping.instruction, mapping.input, mapping.response, mapping.chat) == expected
    assert extract(record, mapping) == (("Say hi.", "", "Hi!"), "")


def test_chat_turns_of_text_parts_are_their_text_and_an_image_part_makes_the_row_unusable():
    def turn(role, *parts):
        return {"role": role, "content": [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]}

    record = {"messages": [turn("user", "Say hi.", "Politely."), turn("assistant", "Hi!")]}
    mapping = resolve_mapping(record, Fields(), None)
    assert mapping.chat == "messages" and extract(record, mapping) == (("Say hi.\nPolitely.", "", "Hi!"), "")
    image = {"messages": [turn("user", "What is shown?", {"type": "image_url", "image_url": {"url": "x.png"}}),
                          turn("assistant", "A cat.")]}
    texts, reason = extract(image, mapping)
    assert texts is None and "is list, expected text" in reason


def test_fields_inside_an_object_of_the_record_are_found_as_dotted_paths(tmp_path):
    record = {"id": 7, "meta": {"source": "x"}, "data": {"Instruction": "Say hi.", "output": "Hi!"}}
    mapping = resolve_mapping(record, Fields(), None)
    assert (mapping.instruction, mapping.response) == ("data.Instruction", "data.output")
    assert extract(record, mapping) == (("Say hi.", "", "Hi!"), "")
    chat = {"sample": {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]}}
    assert extract(chat, resolve_mapping(chat, Fields(), None)) == (("Say hi.", "", "Hi!"), "")
    deeper = {"a": {"b": {"instruction": "Say hi."}}}  # one level only
    with pytest.raises(UserError, match="cannot find the instruction field among: a;"):
        resolve_mapping(deeper, Fields(), tmp_path / "x.jsonl")


def test_alpaca_takes_the_english_fields():
    record = read_jsonl(corpus("alpaca_en_zh_500"), 1)[0]
    texts, _ = extract(record, resolve_mapping(record, Fields(), None))
    assert texts[0] == record["en_instruction"].strip() and texts[2] == record["en_output"].strip()


def test_unmappable_file_error_names_its_fields(tmp_path):
    with pytest.raises(UserError) as e:
        resolve_mapping({"foo": "a", "bar": "b"}, Fields(), tmp_path / "x.jsonl")
    assert "x.jsonl" in str(e.value) and "bar, foo" in str(e.value) and "[fields]" in str(e.value)


def test_an_unmappable_record_holding_a_list_of_records_says_so(tmp_path):
    # a minified {"data": [...]}: one line, so one record (spread over lines, its list is read: test_readers)
    with pytest.raises(UserError, match=r"among: data, version; 'data' holds a list of 2 objects: save it as JSON Lines"):
        resolve_mapping({"version": "1", "data": [{"q": "a"}, {"q": "b"}]}, Fields(), tmp_path / "x.json")


def test_config_fields_win_and_may_be_nested():
    record = {"q": {"text": "What is 2+2?"}, "a": "4", "instruction": "ignored"}
    mapping = resolve_mapping(record, Fields(instruction="q.text", response="a"), None)
    assert extract(record, mapping)[0] == ("What is 2+2?", "", "4")


@pytest.mark.parametrize("record,reason", [
    ({"instruction": None, "output": "x"}, "missing instruction"),
    ({"output": "x"}, "missing instruction"),
    ({"instruction": "  ", "output": "x"}, "empty instruction"),
    ({"instruction": [{"a": 1}], "output": "x"}, "is list"),
    ({"instruction": {"a": 1}, "output": "x"}, "is dict"),
    ({"instruction": True, "output": "x"}, "is bool"),
    ({"instruction": "a" * (MAX_FIELD_CHARS + 1), "output": "x"}, "characters (limit"),
    ({"instruction": "ok", "output": ["x", {"a": 1}]}, "is list"),
])
def test_unusable_rows_get_a_reason(record, reason):
    mapping = resolve_mapping({"instruction": "", "output": ""}, Fields(), None)
    texts, why = extract(record, mapping)
    assert texts is None and reason in why


def test_numbers_become_text():
    mapping = resolve_mapping({"question": "", "answer": ""}, Fields(), None)
    assert extract({"question": "2+2?", "answer": 4}, mapping)[0] == ("2+2?", "", "4")


def test_a_float_nan_is_a_missing_value_not_the_text_nan():
    # json.dumps writes pandas' empty cells as NaN, which Python's JSON reader takes as a float.
    mapping = resolve_mapping({"question": "", "context": "", "answer": ""}, Fields(), None)
    assert extract({"question": "2+2?", "context": float("nan"), "answer": float("nan")}, mapping)[0] == ("2+2?", "", "")
    texts, why = extract({"question": float("nan"), "answer": "4"}, mapping)
    assert texts is None and "missing instruction" in why


_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                       max_leaves=8)
_keys = st.sampled_from(["instruction", "en_instruction", "input", "output", "question", "answer", "text", "code",
                         "instances", "prompt", "misc", ""]) | st.text(max_size=8)


@given(st.lists(st.dictionaries(_keys, _values, max_size=6), min_size=1, max_size=5))
def test_fuzzed_records_map_or_fail_cleanly(records):
    try:
        mapping = resolve_mapping(records[0], Fields(), None)
    except UserError as e:
        assert "cannot find the" in str(e)
        return
    for record in records:
        texts, reason = extract(record, mapping)
        if texts is None:
            assert reason
        else:
            instruction, input_, response = texts
            assert isinstance(input_, str) and isinstance(response, str) and instruction.strip() and not reason
