"""Chains of config changes on one run directory: after every step, rules 1 and 2 of a single change
(tests/scenarios/test_config_changes.py) still hold: the tables equal those of a fresh run under the
step's config, and the requests sent are the ones such a run sends that were never answered in the
directory. A chain goes back to earlier configs, stops some steps early with `--max-samples` before
finishing them, and runs steps under worker processes, so the kept versions, the carries and the
restores meet each other as they do in a user's week of iterating."""
import shutil
from collections import Counter

import pytest

from tests.conftest import corpus, head_jsonl
from tests.fault_server import FaultServer
from tests.scenarios.test_config_changes import BASE, CHANGES, config, run, tables

pytestmark = pytest.mark.slow

# A step: a change of CHANGES applied to the config before it (a section it names replaces that section),
# or ("back", k) to the config after step k (0: the base config); then the executor, and the
# `--max-samples` of a first run that stops early (0: none).
CHAINS = {
    # rounds raised back to a config whose tables are kept: the copy made the second time and the kept
    # one both end up in one version folder, which must hold each row once
    "rounds up and down": [("rounds raised", "local", 0), (("back", 0), "local", 0), (("back", 1), "local", 0),
                           ("dedup threshold", "local", 0), (("back", 1), "local", 0)],
    "filters and committee": [("tau lower", "processes", 0), ("filter parameter", "local", 3),
                              (("back", 0), "local", 0), ("model removed", "processes", 2), (("back", 2), "local", 0)],
    "prompts and waves": [("generate prompt", "local", 0), ("one wave", "processes", 0), ("tau higher", "local", 4),
                          (("back", 1), "processes", 0), (("back", 0), "local", 0)],
}


@pytest.fixture(scope="module")
def server():
    with FaultServer(faults=False) as s:
        yield s


@pytest.mark.parametrize("chain", list(CHAINS))
def test_every_step_of_a_chain_of_changes_leaves_a_fresh_runs_tables_with_only_the_calls_never_answered(
        chain, server, tmp_path):
    seeds = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 24)
    run_dir = tmp_path / "run"
    history = [dict(BASE)]
    answered = run(server, seeds, run_dir, config(server.url, **BASE))
    for step, (change, executor, stop_at) in enumerate(CHAINS[chain], start=1):
        if isinstance(change, tuple):
            overrides = history[change[1]]
        else:
            here = tmp_path / f"step{step}"
            here.mkdir()
            overrides = {**history[-1], **CHANGES[change](here)}
        history.append(overrides)
        cfg = config(server.url, **overrides)
        asked = run(server, seeds, run_dir, cfg, executor=executor, max_samples=stop_at) if stop_at else Counter()
        asked += run(server, seeds, run_dir, cfg, executor=executor)
        fresh_dir = tmp_path / f"fresh{step}"
        fresh = run(server, seeds, fresh_dir, cfg)
        assert tables(run_dir) == tables(fresh_dir), f"step {step} ({change}): the tables of a fresh run"
        expected = Counter({body: n for body, n in fresh.items() if body not in answered})
        assert asked == expected, f"step {step} ({change}): {sum(asked.values())} requests sent, " \
                                  f"{sum(expected.values())} never answered before"
        answered += asked
        shutil.rmtree(fresh_dir)
