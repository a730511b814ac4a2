"""The decision-preserving short-circuit gives the same decisions as the full protocol, with fewer calls."""
from fractions import Fraction

import pytest

from gra_stream.progress import Progress
from gra_stream.runner import run_pipeline
from gra_stream.stages.review import certain_reject
from gra_stream.store import Store
from tests.conftest import fake_config, head_jsonl, shared_seed


def config(**committee):
    return fake_config(committee=committee)


@pytest.mark.parametrize("means,failed,remaining,certain", [
    ([7, 7], False, 1, False),                          # (14 + 10) / 3 = 8: tau is still reachable
    ([7, Fraction(13, 2)], False, 1, True),             # (13.5 + 10) / 3 < 8
    ([4], False, 2, False),                             # (4 + 20) / 3 = 8
    ([Fraction(23, 6)], False, 2, True),                # just below
    ([10], True, 2, True),                              # a failed instruction check decides at once
    ([], False, 1, True),                               # 0 parsed + 1 left < min_reviews 2
    ([], False, 2, False),
])
def test_certain_reject_boundaries(means, failed, remaining, certain):
    assert bool(certain_reject([Fraction(m) for m in means], failed, remaining, config())) == certain


def decisions(run_dir):
    con = Store(run_dir).connect()
    verdicts = dict(con.sql("SELECT id, decision FROM verdicts").fetchall())
    kept = {r[0] for r in con.sql("SELECT id FROM samples").fetchall()}
    adjudicated = dict(con.sql("SELECT id, keep FROM adjudications").fetchall())
    calls = con.sql("SELECT count(*) FROM calls WHERE role = 'reviewer'").fetchall()[0][0]
    skipped = con.sql("SELECT count(*) FROM reviews WHERE status = 'skipped'").fetchall()[0][0]
    return verdicts, kept, adjudicated, calls, skipped


def test_short_circuit_decides_exactly_like_the_full_protocol(tmp_path):
    seeds = [shared_seed("self_instruct_seed_tasks.jsonl"),
             head_jsonl(shared_seed("gsm8k_train.jsonl"), tmp_path / "gsm.jsonl", 200)]
    full, short = tmp_path / "full", tmp_path / "short"
    run_pipeline(seeds, full, fake_config(committee={"short_circuit": False}), progress=Progress(quiet=True))
    run_pipeline(seeds, short, fake_config(committee={"short_circuit": True}), progress=Progress(quiet=True))
    v_full, kept_full, adj_full, calls_full, skipped_full = decisions(full)
    v_short, kept_short, adj_short, calls_short, skipped_short = decisions(short)
    assert v_short == v_full and kept_short == kept_full and adj_short == adj_full
    assert skipped_full == 0 and skipped_short > 0
    assert calls_short + skipped_short == calls_full
    assert len(v_full) > 200 and {"accept", "reject", "adjudicate"} == set(v_full.values())
