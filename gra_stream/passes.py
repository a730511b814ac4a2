"""Passes: the order in which the runner takes its (round, wave, stage) passes, and which may run at once.

A pass runs one stage over the pending rows of one wave (gra_stream/waves.py). A wave goes through the
stages in order, each stage takes the waves in order, and round r starts once round r - 1 is done (its
samples anchor round r's tasks). So pass (r, w, s) may start once (r, w - 1, s) is done and so is (r, w, t)
for each stage t that s waits for: the stage before it, unless it declares others (`Stage.after`: the
seeds' embedding waits for nothing, so it runs beside the first wave's LLM stages). With two passes at
once stage s works on wave w while an earlier stage works on wave w + 1, as the stages of a pipeline do.
At most two waves are in the stages at once (WAVES_AT_ONCE), and the first wave runs alone, so that
nothing holds up the run's first samples.

A pass reads the same pending rows whenever it runs: rows of later waves are outside its scope, and what
it reads of its own and earlier waves is done by the time it may start. So the tables never depend on which
passes overlapped, and taking them one at a time makes the same ones.

Stage by stage (`by_stage`), one pass at a time, each stage takes every wave before the next stage starts:
what the runner does once generation has nothing left to do (gra_stream/runner.py). The same rule holds,
as no stage of a round reads what a later stage made in that round.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass


PASSES_AT_ONCE = 2  # where they may overlap: one pass's tail and the runner's own work fill the other's gaps
WAVES_AT_ONCE = 2   # a wave starts once the wave two before it is through every stage: the next wave fills
                    # the gaps of the one before, and later waves, each larger, do not hold up its first samples


@dataclass(frozen=True, order=True)
class Pass:
    round: int  # from 1
    wave: int   # from 0, in the wave plan
    stage: int  # from 0, in the stage list


def all_passes(rounds: int, waves: int, stages: int, by_stage: bool = False) -> list[Pass]:
    """Every pass, in the order one at a time takes them: wave by wave, or with `by_stage` stage by stage."""
    order = [Pass(r, w, s) for r in range(1, rounds + 1) for w in range(waves) for s in range(stages)]
    return sorted(order, key=lambda p: (p.round, p.stage, p.wave)) if by_stage else order


def chain(stages: int) -> list[tuple[int, ...]]:
    """What each stage waits for when none declares otherwise: the stage before it."""
    return [(s - 1,) if s else () for s in range(stages)]


def declared_waits(stages: Sequence) -> list[tuple[int, ...]]:
    """`after` for `ready` from a list of stages (gra_stream/stages): for each, the stages before it whose
    pass over a wave its own waits for (`Stage.after`, or the stage before it; a named stage that is not in
    the list is left out)."""
    index = {stage.name: i for i, stage in enumerate(stages)}
    out = []
    for i, stage in enumerate(stages):
        names = stage.after if stage.after is not None else [s.name for s in stages[i - 1:i]]
        out.append(tuple(index[name] for name in names if name in index))
        if any(t >= i for t in out[-1]):
            raise ValueError(f"stage {stage.name} waits for a stage listed after it: {stage.after}")
    return out


def ready(p: Pass, done: set[Pass], waves: int, stages: int, after: list[tuple[int, ...]] | None = None) -> bool:
    """Whether `p` may start once the passes in `done` are. `after[s]`: the stages whose pass over the same
    wave stage s waits for (`chain` if None); every stage must lead, through them, to the last one."""
    before = [Pass(p.round, p.wave, t) for t in (after or chain(stages))[p.stage]]
    if p.wave:  # the wave before at this stage; and the first wave runs alone, then WAVES_AT_ONCE at most
        before.append(Pass(p.round, p.wave - 1, p.stage))
        before.append(Pass(p.round, max(0, p.wave - WAVES_AT_ONCE), stages - 1))
    elif p.round > 1:
        before.append(Pass(p.round - 1, waves - 1, stages - 1))
    return all(q in done for q in before)


def run_passes(waves: int, stages: int, rounds: int, run: Callable[[Pass], object],
               finished: Callable[[Pass, object], bool], halt: Callable[[BaseException], None], at_once: int,
               by_stage: bool = False, after: list[tuple[int, ...]] | None = None) -> None:
    """Run every pass: `run(p)` does pass p and returns what `finished(p, result)` is told when it is done;
    `finished` returns False to start no further pass. Up to `at_once` passes run at once, each in a thread
    of its own (`at_once = 1`: in this thread, in order). When a pass raises, `halt(error)` asks the others to
    stop at their next batch boundary, and the first error is raised once none is running. With `by_stage`,
    one at a time, stage by stage. `after` as for `ready`."""
    order = all_passes(rounds, waves, stages, by_stage)
    if at_once <= 1 or by_stage:
        for p in order:
            if not finished(p, run(p)):
                return
        return
    done: set[Pass] = set()
    running: dict[Future, Pass] = {}
    error: BaseException | None = None
    starting = True
    with ThreadPoolExecutor(at_once, thread_name_prefix="pass") as threads:
        while True:
            while starting and len(running) < at_once:
                p = next((q for q in order if ready(q, done, waves, stages, after)), None)
                if p is None:
                    break
                order.remove(p)
                running[threads.submit(run, p)] = p
            if not running:
                break
            completed, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(completed, key=running.get):
                p = running.pop(future)
                try:
                    result = future.result()
                except BaseException as e:  # noqa: BLE001 - re-raised below, once nothing runs
                    if error is None:
                        error, starting = e, False
                        halt(e)
                    continue
                done.add(p)
                starting = finished(p, result) and starting
    if error is not None:
        raise error
