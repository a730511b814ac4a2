import json

import pytest

from gra_stream.calibrate import calibrate, make_labelled_set, roc_auc
from gra_stream.errors import UserError
from tests.conftest import fake_config, gra, corpus


def test_roc_auc_known_values():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([1, 2, 3], [0, 1, 1]) == 1.0
    assert roc_auc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5
    assert roc_auc([1, 2], [1, 1]) is None


def test_labelled_set_is_balanced_and_really_corrupted(tmp_path):
    out = tmp_path / "labelled.jsonl"
    kinds = make_labelled_set([corpus("gsm8k_train")], out, size=30)
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 30 and sum(r["label"] for r in rows) == 15
    assert kinds == {"good": 15, "wrong_number": 5, "mismatched": 5, "truncated": 5}
    for good, bad in zip(rows[::2], rows[1::2]):
        assert good["instruction"] == bad["instruction"] and good["response"] != bad["response"]
        if bad["corruption"] == "wrong_number":
            assert good["response"].split("####")[-1] != bad["response"].split("####")[-1]
        if bad["corruption"] == "truncated":
            assert good["response"].startswith(bad["response"]) and len(bad["response"]) < len(good["response"])


def test_calibration_report_is_consistent(tmp_path):
    out = tmp_path / "labelled.jsonl"
    make_labelled_set([corpus("gsm8k_train")], out, size=40)
    report = calibrate(out, fake_config())
    assert report["samples"] == 40 and report["reviews"] == 120
    assert {m["model"] for m in report["per_model"]} == {f"fake-{c}" for c in "abcde"}
    assert sum(m["reviews"] for m in report["per_model"]) == report["reviews"] - report["quarantined"]
    c = report["committee"]
    assert c["accept"] + c["adjudicate"] + c["reject"] == c["decided"]
    for g in report["grid"]:
        assert g["accept"] + g["adjudicate"] + g["reject"] == c["decided"]
    current = next(g for g in report["grid"] if (g["tau"], g["delta"]) == (8.0, 1.5))
    assert (current["accept"], current["reject"]) == (c["accept"], c["reject"])
    strict = [g["accept"] for g in report["grid"] if g["delta"] == 1.5]
    assert strict == sorted(strict, reverse=True), "a higher tau can only accept fewer"


def test_bad_labelled_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "response": "y"}\n')
    with pytest.raises(UserError, match="needs instruction, response and label"):
        calibrate(bad, fake_config())


@pytest.mark.slow
def test_calibrate_with_the_embedded_model(tmp_path):
    out = tmp_path / "labelled.jsonl"
    gra("calibrate", "--make-set", out, "--from", corpus("gsm8k_train"), "--size", "8")
    result = gra("calibrate", out, "--json", timeout=1200)
    report = json.loads(result.stdout)
    assert report["samples"] == 8 and report["reviews"] == 24
    assert report["per_model"][0]["model"] == "smollm2"
    print(json.dumps(report["committee"]))
