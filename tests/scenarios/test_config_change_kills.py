"""A run killed while it switches to a changed config, or while it recomputes under it, then run again,
leaves the tables of an uninterrupted run under the new config, and the old config's tables kept whole."""
import os
import shutil
import signal

import pytest

from gra_stream import carry, kept_versions
from gra_stream.config import load_config
from gra_stream.plan import preview
from gra_stream.progress import Progress
from gra_stream.runner import run_pipeline
from gra_stream.stages import all_stages
from gra_stream.store import Store
from tests.conftest import Said, corpus, fake_config_file, gra, head_jsonl
from tests.invariants import FINAL_TABLES, SMALL_WALK, check_run, segments, wait_for
from tests.scenarios.test_resume import start

pytestmark = pytest.mark.slow

SMALL = "batch_size = 16\ncpu_batch_size = 16\n"
TAU = "[committee]\ntau = 6.5\n"
FILTER = '[filters]\nenabled = ["max_length", "refusal", "overlap"]\n'  # min_length off: more generations pass


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return head_jsonl(corpus("self_instruct_seed_tasks"), tmp_path_factory.mktemp("seeds") / "s.jsonl", 40)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, seeds):
    """An uninterrupted run under the base config and one under the changed config."""
    tmp = tmp_path_factory.mktemp("reference")
    configs = {}
    for name, extra in (("base", SMALL), ("changed", SMALL + TAU), ("filtered", SMALL + FILTER)):
        (tmp / name).mkdir()
        configs[name] = fake_config_file(tmp / name, extra, diversity=SMALL_WALK)
        gra("run", seeds, "--run-dir", tmp / name / "run", "--config", configs[name], "--quiet")
    shutil.copytree(tmp / "base" / "run", tmp / "switched")
    gra("run", seeds, "--run-dir", tmp / "switched", "--config", configs["changed"], "--quiet")
    return {"configs": configs,
            "states": {name: state(tmp / name / "run") for name in configs},
            "kept": {name: state(tmp / name / "run", "main.") for name in configs},
            "dirs": {"base": tmp / "base" / "run", "switched": tmp / "switched"}}


def state(run_dir, schema=""):
    """The final tables (tests/invariants.py), read in this process; of a kept version with `schema`."""
    con = Store(run_dir).connect()
    return {name: con.sql(query.replace(" FROM ", f" FROM {schema}")).pl().to_dicts()
            for name, query in FINAL_TABLES.items() if name != "rejections" or not schema}


# (run directory to start from, config to switch to, what is then kept and as what)
SWITCHES = {"to a new config": ("base", "changed", "base", "v1"),
            "back to a kept config": ("switched", "base", "changed", "v2"),
            # reviews, adjudications and annotations carried from v1, a segment at a time
            "to another filter": ("base", "filtered", "base", "v1")}


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_a_kill_at_every_step_of_a_switch_then_a_rerun_ends_as_an_uninterrupted_one(tmp_path, seeds, runs, monkeypatch,
                                                                                     switch):
    start_dir, to, kept, label = SWITCHES[switch]
    config = load_config(runs["configs"][to])
    real_replace = os.replace
    step = mid_switch = 0
    while True:
        run_dir = tmp_path / f"run{step}"
        shutil.copytree(runs["dirs"][start_dir], run_dir)
        moves = [0]

        def replace(src, dst, limit=step):
            if "versions" in str(dst) or "versions" in str(src) or carry.PREFIX in str(dst):  # carried rows too
                if moves[0] == limit:
                    raise KeyboardInterrupt("killed")  # what the next rename would have been: never done
                moves[0] += 1
            return real_replace(src, dst)

        monkeypatch.setattr(kept_versions.os, "replace", replace)
        try:
            run_pipeline([seeds], run_dir, config, progress=Progress(quiet=True))
            finished = True
        except KeyboardInterrupt:
            finished = False
        monkeypatch.setattr(kept_versions.os, "replace", real_replace)
        if not finished:  # the dry run and the run say the same: a switch to finish, the plan, or neither
            dry = preview(Store(run_dir), [seeds], config, all_stages())
            said = Said(quiet=True)
            run_pipeline([seeds], run_dir, config, progress=said)
            interrupted = "a run stopped while it switched these tables to this config" in dry
            mid_switch += interrupted
            assert interrupted == any(line.startswith("finished the switch") for line in said.lines), dry
            assert dry.startswith("the config changed") == any(line.startswith("the config changed")
                                                               for line in said.lines), said.lines
        assert state(run_dir) == runs["states"][to], f"killed before rename {step}"
        assert state(run_dir, f"{label}.") == runs["kept"][kept], f"the tables kept whole (killed before rename {step})"
        assert [k.label for k in Store(run_dir).kept()] == [label]
        if finished:
            break
        step += 1
    assert step > 10, "every segment move was a kill point"
    assert mid_switch, "some kills left a switch to finish"


KILL_POINTS = [("reviews", 1), ("verdicts", 2), ("diversity", 2), ("annotations", 1), ("samples", 1)]  # diversity: within its one pass


def test_sigkill_while_recomputing_under_a_changed_config_then_resume(tmp_path, seeds, runs):
    for table, target in KILL_POINTS:
        run_dir = tmp_path / f"{table}{target}"
        shutil.copytree(runs["dirs"]["base"], run_dir)
        config = fake_config_file(tmp_path, SMALL + TAU, latency_s=0.01, diversity=SMALL_WALK)
        proc = start(seeds, run_dir, config)
        reached = wait_for(proc, lambda: (run_dir / "versions").exists() and segments(run_dir, table) >= target)
        assert reached, f"the run ended before {table} had {target} segments"
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        gra("run", seeds, "--run-dir", run_dir, "--config", config, "--quiet")
        assert state(run_dir) == runs["states"]["changed"], f"killed at {table} {target}"
        assert state(run_dir, "v1.") == runs["kept"]["base"]
        check_run(run_dir)
