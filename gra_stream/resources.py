"""Files the package reads at run time, found through importlib.resources so that an editable install, a
wheel and an sdist read the same ones: the bundled configs and SQL (the repository's configs/ and sql/
folders, installed as gra_stream.configs and gra_stream.sql), the prompt templates and the bundled data."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _folder(package: str) -> Path:
    # pip installs a package as plain files, so each resource is a path that open() and DuckDB can read
    return Path(str(files(package)))


def config_file(name: str) -> Path:
    return _folder("gra_stream.configs") / name


def sql_dir() -> Path:
    return _folder("gra_stream.sql")


def prompts_dir() -> Path:
    return _folder("gra_stream.prompts")


# Benchmark test sets shipped with the package (gra_stream/bundled/README.md has sources and licences):
# `[decontamination] references` may name them instead of giving a file.
REFERENCES = {"gsm8k_test": "gsm8k_test.jsonl.gz", "humaneval": "humaneval.jsonl.gz"}


def reference_path(reference: str) -> Path:
    """A decontamination reference: a bundled test set by name, else a file path."""
    if reference in REFERENCES and not Path(reference).exists():
        return _folder("gra_stream.bundled") / REFERENCES[reference]
    return Path(reference)


def calibration_source() -> Path:
    """Seeds for `calibrate --make-set` when the user gives none: 500 GSM8K train problems."""
    return _folder("gra_stream.bundled") / "gsm8k_train_500.jsonl.gz"
