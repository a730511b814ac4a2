"""The order of the runner's passes: a wave goes through the stages in order (each after the stages it
waits for), each stage takes the waves in order, two waves at most are in the stages, rounds are
barriers, and up to `at_once` passes run at once within those rules."""
import threading
import time
from dataclasses import replace

import pytest

from gra_stream.passes import Pass, all_passes, declared_waits, ready, run_passes
from gra_stream.stages import all_stages


def test_a_pass_waits_for_its_wave_at_the_stage_before_and_for_the_wave_before_at_its_stage():
    done = {Pass(1, 0, s) for s in range(3)} | {Pass(1, 1, 0), Pass(1, 1, 1)}
    assert ready(Pass(1, 1, 2), done, waves=4, stages=3)
    assert ready(Pass(1, 2, 0), done, waves=4, stages=3)
    assert not ready(Pass(1, 2, 1), done, waves=4, stages=3), "wave 2 has not been through stage 0"
    assert ready(Pass(1, 2, 1), done | {Pass(1, 2, 0)}, waves=4, stages=3)
    assert not ready(Pass(1, 3, 0), done, waves=4, stages=3), "stage 0 takes the waves in order"


def test_the_first_wave_runs_alone_then_a_wave_starts_once_the_wave_two_before_it_is_through():
    assert not ready(Pass(1, 1, 0), {Pass(1, 0, 0), Pass(1, 0, 1)}, waves=4, stages=3), "wave 0 runs alone"
    assert ready(Pass(1, 1, 0), {Pass(1, 0, s) for s in range(3)}, waves=4, stages=3)
    done = {Pass(1, w, s) for w in (0, 1, 2) for s in range(3)} - {Pass(1, 1, 2), Pass(1, 2, 2)}
    assert ready(Pass(1, 2, 1), done - {Pass(1, 2, 1)}, waves=4, stages=3), "waves 1 and 2 at once"
    assert not ready(Pass(1, 3, 0), done, waves=4, stages=3), "wave 1 is still in its last stage"
    assert ready(Pass(1, 3, 0), done | {Pass(1, 1, 2)}, waves=4, stages=3)


def test_a_round_starts_once_the_round_before_is_through_every_stage_and_wave():
    round_one = set(all_passes(1, waves=2, stages=3))
    assert not ready(Pass(2, 0, 0), round_one - {Pass(1, 1, 2)}, waves=2, stages=3)
    assert ready(Pass(2, 0, 0), round_one, waves=2, stages=3)


def test_a_stage_that_declares_what_it_waits_for_waits_for_that_alone():
    after = [(), (), (0,), (2, 1)]  # stage 1 waits for nothing, stage 3 for stages 2 and 1
    assert ready(Pass(1, 0, 1), set(), waves=2, stages=4, after=after), "beside stage 0 of its wave"
    assert ready(Pass(1, 0, 2), {Pass(1, 0, 0)}, waves=2, stages=4, after=after), "not after stage 1"
    assert not ready(Pass(1, 0, 3), {Pass(1, 0, s) for s in (0, 2)}, waves=2, stages=4, after=after)
    assert ready(Pass(1, 0, 3), {Pass(1, 0, s) for s in (0, 1, 2)}, waves=2, stages=4, after=after)
    assert not ready(Pass(1, 1, 1), {Pass(1, 0, 1)}, waves=2, stages=4, after=after), "the first wave runs alone"


def test_the_seeds_embedding_waits_for_nothing_and_the_diversity_filter_waits_for_it():
    stages = all_stages()
    names = [s.name for s in stages]
    waits = {names[i]: {names[t] for t in after} for i, after in enumerate(declared_waits(stages))}
    assert waits["embed"] == set() and waits["generate"] == {"profile"}
    assert waits["diversity"] == {"adjudicate", "embed"}
    assert all(waits[n] == {names[i - 1]} for i, n in enumerate(names) if n not in ("profile", "embed", "generate",
                                                                                     "diversity"))
    record = Recorder()
    run_passes(2, len(stages), 1, record, lambda p, r: True, lambda e: None, at_once=2, after=declared_waits(stages))
    profile, embed = record.spans[Pass(1, 0, 0)], record.spans[Pass(1, 0, 1)]
    assert embed[0] < profile[1] and profile[0] < embed[1], "the first wave's profile and embed passes overlap"


def test_a_stage_listed_before_one_it_waits_for_is_refused():
    late = replace(all_stages()[1], after=("generate",))
    with pytest.raises(ValueError, match="waits for a stage listed after it"):
        declared_waits([*all_stages()[:1], late, *all_stages()[2:]])


def waits_for(p, waves, stages, after=None):
    """What the rules say `p` waits for, spelled out."""
    for t in (after[p.stage] if after else [p.stage - 1] if p.stage else []):
        yield Pass(p.round, p.wave, t)
    if p.wave:
        yield Pass(p.round, p.wave - 1, p.stage)
    if p.wave >= 1:  # the first wave alone, then two waves at most
        yield Pass(p.round, max(0, p.wave - 2), stages - 1)
    if p.round > 1 and p == Pass(p.round, 0, 0):
        yield Pass(p.round - 1, waves - 1, stages - 1)


class Recorder:
    """A pass that takes a little time and records when it ran, and how many ran at once."""

    def __init__(self, seconds=0.02):
        self.seconds, self.lock = seconds, threading.Lock()
        self.spans, self.now, self.most, self.threads = {}, 0, 0, set()

    def __call__(self, p):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            self.threads.add(threading.current_thread().name)
        start = time.monotonic()
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1
            self.spans[p] = (start, time.monotonic())
        return p.stage


@pytest.mark.parametrize("after", [None, [(), (), (1, 0)]])
def test_passes_overlap_two_at_a_time_and_none_starts_before_what_it_waits_for(after):
    record, told = Recorder(), []
    run_passes(4, 3, 2, record, lambda p, result: told.append((p, result)) or True, lambda e: None, at_once=2,
               after=after)
    assert sorted(record.spans) == all_passes(2, 4, 3), "every pass ran, once"
    assert record.most == 2, "two passes ran at once, never more"
    for p, (start, _) in record.spans.items():
        for q in waits_for(p, waves=4, stages=3, after=after):
            assert record.spans[q][1] <= start, f"{p} started before {q} was over"
    assert sorted(told) == [(p, p.stage) for p in all_passes(2, 4, 3)], "finished hears every pass and its result"


def test_one_at_a_time_runs_the_passes_in_order_in_this_thread():
    record, order = Recorder(0), []
    run_passes(2, 3, 1, lambda p: order.append(p) or record(p), lambda p, r: True, lambda e: None, at_once=1)
    assert order == all_passes(1, 2, 3)
    assert record.threads == {threading.current_thread().name}


@pytest.mark.parametrize("at_once", [1, 2])
def test_stage_by_stage_each_stage_takes_every_wave_before_the_next_one_at_a_time(at_once):
    record, order = Recorder(0), []
    run_passes(3, 2, 2, lambda p: order.append(p) or record(p), lambda p, r: True, lambda e: None, at_once=at_once,
               by_stage=True)
    assert order == [Pass(r, w, s) for r in (1, 2) for s in (0, 1) for w in (0, 1, 2)]
    assert record.threads == {threading.current_thread().name}


@pytest.mark.parametrize("at_once", [1, 2])
def test_when_finished_says_enough_no_further_pass_starts(at_once):
    record = Recorder()
    run_passes(4, 2, 1, record, lambda p, r: p != Pass(1, 1, 1), lambda e: None, at_once=at_once)
    started = set(record.spans)
    assert Pass(1, 1, 1) in started and Pass(1, 3, 0) not in started and Pass(1, 2, 1) not in started


def test_a_failing_pass_halts_the_others_and_its_error_is_raised_once_they_are_done():
    halted, record = [], Recorder(0.05)

    def run(p):
        if p == Pass(1, 1, 0):
            raise ValueError("broken batch")
        return record(p)
    with pytest.raises(ValueError, match="broken batch"):
        run_passes(3, 3, 1, run, lambda p, r: True, lambda e: halted.append(e), at_once=2)
    assert [str(e) for e in halted] == ["broken batch"], "halted once, told why"
    assert record.now == 0, "the pass running beside it finished before the error was raised"
    assert Pass(1, 2, 0) not in record.spans, "no pass starts after a failure"
