import re

from gra_stream.decontaminate import contaminated, reference_sets
from tests.conftest import corpus, frame, head_jsonl, read_jsonl, run_fake


def test_planted_contamination_is_found_and_clean_text_is_not():
    refs = reference_sets(("gsm8k_test", "humaneval"), 13)  # the test sets shipped with the package, by name
    item = read_jsonl(corpus("gsm8k_test"), 1)[0]
    planted = "Here is a fun puzzle for you. " + item["question"] + " Think step by step."
    assert contaminated(planted, refs, 13) == "gsm8k_test"
    prompt = read_jsonl(corpus("humaneval"), 1)[0]["prompt"]
    assert contaminated("Complete this function:\n" + prompt, refs, 13) == "humaneval"
    assert contaminated("Write a haiku about autumn leaves falling slowly in a quiet park at dusk today.", refs, 13) == ""
    words = re.findall(r"\w+", item["question"])
    assert contaminated(" ".join(words[:12]), refs, 13) == "", "12 shared words are not a 13-gram"
    assert contaminated(" ".join(words[:13]), refs, 13) != ""


def test_contaminated_samples_are_dropped_before_review(tmp_path):
    seeds = head_jsonl(corpus("gsm8k_test"), tmp_path / "leak.jsonl", 20)
    run_dir = tmp_path / "run"
    run_fake([seeds], run_dir, mode="refinement",
             decontamination={"references": ["gsm8k_test"]})
    rejected = frame(run_dir, "SELECT id, detail FROM rejections WHERE reason = 'contaminated'")
    assert rejected.height > 0 and all("gsm8k_test" in d for d in rejected["detail"])
    assert frame(run_dir, "SELECT count(*) AS n FROM gates WHERE passed")["n"][0] == 0, \
        "every refined test question is contaminated (or dropped by an earlier filter)"
    assert frame(run_dir, "SELECT count(*) AS n FROM reviews")["n"][0] == 0, "no review call was spent on them"
