"""Scheduling a pool whose engines do not fit together: at most `resident_engines` are loaded, the
loaded ones are used first, and large batches keep the number of engine starts independent of the
number of rows."""
from gra_stream.backends.pool import ModelPool
from gra_stream.backends.fake import FakeBackend
from tests.conftest import head_jsonl, run_fake, corpus

ENGINES = [{"name": f"engine-{c}", "backend": "vllm", "path": "embedded:smollm2"} for c in "abc"]


def run_counting(monkeypatch, tmp_path, seeds, **overrides):
    """Run with 'vllm' pool models served by fake engines, and return the order engines were started."""
    pools = []

    def make(pool, spec):
        if pool not in pools:
            pools.append(pool)
        return FakeBackend(spec.name)

    monkeypatch.setattr(ModelPool, "_make", make)
    # one wave, so that a stage's batches are all of its rows (with waves a stage visits engines per wave)
    run_fake([seeds], tmp_path, models=ENGINES, waves={"first_seeds": 0}, **overrides)
    return pools[0].loads


def test_one_resident_engine_swaps_per_model_not_per_batch(monkeypatch, tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 150)
    big = run_counting(monkeypatch, tmp_path / "big", seeds, batch_size=1000, vllm={"resident_engines": 1})
    small = run_counting(monkeypatch, tmp_path / "small", seeds, batch_size=10, vllm={"resident_engines": 1})
    everything = run_counting(monkeypatch, tmp_path / "all", seeds, batch_size=10)
    assert sorted(set(everything)) == ["engine-a", "engine-b", "engine-c"] and len(everything) == 3
    # one batch per stage: profile, generate, 3 review rounds, adjudicate, annotate each visit each engine
    # at most once per attempt (1 + max_reasks), whatever the number of rows
    assert len(big) <= 7 * 2 * 3
    assert len(small) > 2 * len(big)
    assert all(a != b for a, b in zip(big, big[1:])), "an engine is never restarted right after itself"
