"""The decision-preserving short-circuit gives the same decisions as the full protocol, with fewer calls."""
import shutil
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

from gra_stream.progress import Progress
from gra_stream.runner import run_pipeline
from gra_stream.stages.review import OUT_OF_REACH, certain_reject
from gra_stream.store import Store
from tests.conftest import fake_config, head_jsonl, corpus


def config(**committee):
    return fake_config(committee=committee)


@pytest.mark.parametrize("totals,failed,remaining,certain", [
    ([42, 42], False, 1, False),                        # means 7, 7: (14 + 10) / 3 = 8, tau is still reachable
    ([42, 39], False, 1, True),                         # means 7, 6.5: (13.5 + 10) / 3 < 8
    ([24], False, 2, False),                            # mean 4: (4 + 20) / 3 = 8
    ([23], False, 2, True),                             # mean 23/6: just below
    ([60], True, 2, True),                              # a failed instruction check decides at once
    ([], False, 1, True),                               # 0 parsed + 1 left < min_reviews 2
    ([], False, 2, False),
])
def test_certain_reject_boundaries(totals, failed, remaining, certain):
    assert bool(certain_reject(totals, failed, remaining, config().committee)) == certain


@given(st.lists(st.integers(0, 60), max_size=4), st.booleans(), st.integers(1, 4), st.sampled_from([7.0, 7.5, 8.0, 8.25]))
def test_certain_reject_in_integers_is_the_rule_in_fractions(totals, failed, remaining, tau):
    """The short-circuit compares in integers; the rule it must agree with is the mean of the means."""
    c = config(tau=tau)
    means = [Fraction(t, 6) for t in totals]
    k = len(means) + remaining
    unreachable = bool(means) and (sum(means) + 10 * remaining) / k < Fraction(str(tau))
    expected = failed or k < c.committee.min_reviews or unreachable
    assert bool(certain_reject(totals, failed, remaining, c.committee)) == expected


def decisions(run_dir):
    con = Store(run_dir).connect()
    verdicts = dict(con.sql("SELECT id, decision FROM verdicts").fetchall())
    kept = {r[0] for r in con.sql("SELECT id FROM samples").fetchall()}
    adjudicated = dict(con.sql("SELECT id, keep FROM adjudications").fetchall())
    calls = con.sql("SELECT count(*) FROM calls WHERE role = 'reviewer'").fetchall()[0][0]
    skipped = con.sql("SELECT count(*) FROM reviews WHERE status = 'skipped'").fetchall()[0][0]
    return verdicts, kept, adjudicated, calls, skipped


def test_short_circuit_decides_exactly_like_the_full_protocol(tmp_path):
    seeds = [corpus("self_instruct_seed_tasks"),
             head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 200)]
    full, short = tmp_path / "full", tmp_path / "short"
    run_pipeline(seeds, full, fake_config(committee={"short_circuit": False}), progress=Progress(quiet=True))
    run_pipeline(seeds, short, fake_config(committee={"short_circuit": True}), progress=Progress(quiet=True))
    v_full, kept_full, adj_full, calls_full, skipped_full = decisions(full)
    v_short, kept_short, adj_short, calls_short, skipped_short = decisions(short)
    assert v_short == v_full and kept_short == kept_full and adj_short == adj_full
    # A sample whose reviewers were skipped because its mean could not reach tau is low_score, also after
    # one review (fewer than min_reviews, 2): not insufficient_reviews, which says that replies did not
    # parse. (The full protocol may name another reason: a later reviewer's failed check.)
    out_of_reach = dict(Store(short).connect().sql(
        "SELECT v.id, v.reason FROM verdicts v WHERE v.id IN (SELECT generation_id FROM reviews "
        f"WHERE error = 'not asked: {OUT_OF_REACH}') AND v.n_reviews = 1").fetchall())
    assert out_of_reach and set(out_of_reach.values()) == {"low_score"}
    assert skipped_full == 0 and skipped_short > 0
    assert calls_short + skipped_short == calls_full
    assert len(v_full) > 200 and {"accept", "reject", "adjudicate"} == set(v_full.values())


def test_min_reviews_changes_which_reviewers_are_asked_and_a_changed_one_recomputes_them(tmp_path):
    """With replies that stay unparseable (no re-asks), the short-circuit skips reviewers once too few
    reviews can parse to reach min_reviews; raising it on a finished run leaves the reviews a fresh run
    makes, not the ones asked under the old value."""
    seeds = [head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 40)]
    before, changed, fresh = tmp_path / "before", tmp_path / "changed", tmp_path / "fresh"
    run_pipeline(seeds, before, fake_config(max_reasks=0), progress=Progress(quiet=True))
    shutil.copytree(before, changed)
    raised = fake_config(max_reasks=0, committee={"min_reviews": 3})
    run_pipeline(seeds, changed, raised, progress=Progress(quiet=True))
    run_pipeline(seeds, fresh, raised, progress=Progress(quiet=True))
    query = "SELECT id, status, error FROM reviews ORDER BY id"
    skipped = "SELECT count(*) FROM reviews WHERE status = 'skipped'"
    assert Store(fresh).connect().sql(skipped).fetchall() != Store(before).connect().sql(skipped).fetchall()
    assert Store(changed).connect().sql(query).fetchall() == Store(fresh).connect().sql(query).fetchall()
