"""Seed paths as users have them: files, folders of shards (the hub's `data/train-*.parquet` layout), glob
patterns and datasets saved with `datasets.save_to_disk`, expanded into the files to read, in a fixed order.

A folder whose files are named after splits (train, test, validation...) gives its train split only: a
test split must not become seeds (decontamination is for keeping it out). Give the other files by name to
use them.
"""
from __future__ import annotations

import glob
import json
import re
from collections import Counter
from pathlib import Path

from gra_stream.errors import UserError
from gra_stream.readers import SEED_TYPES, detect_format

SPLITS = ("train", "test", "validation", "valid", "val", "dev", "eval")
METADATA = {"dataset_info.json", "dataset_infos.json", "state.json", "dataset_dict.json"}  # datasets and the hub
GLOB_CHARS = set("*?[")
URL = re.compile(r"^[a-z][a-z0-9+.-]+:/")  # https://, s3://, hf://... (a Path keeps one slash of the two)


def expand_seed_paths(paths: list[Path]) -> list[Path]:
    """The seed files behind `paths`, each folder expanded, each glob pattern (`data/*.jsonl`,
    `shards/**/*.parquet`, quoted so that the shell leaves it) matched; a missing path is a one-line error.
    A pattern's train split is not picked out: it names the files it matches. A file is listed once."""
    files = []
    for path in paths:
        if not path.exists() and GLOB_CHARS.intersection(str(path)):
            files.extend(_matches(str(path)))
            continue
        if not path.exists() and URL.match(str(path)):
            url = str(path).replace(":/", "://", 1)
            raise UserError(f"seed file {url} is a URL; gra-stream reads local files: download it first (a hub "
                            f"dataset: hf download NAME --repo-type dataset --local-dir DIR, then give DIR)")
        if not path.exists() and str(path) == "-":
            raise UserError("seeds cannot come from standard input: a run reads its seed files again to resume "
                            "and to take in rows added since; save them to a file (a .jsonl) and give its path")
        if not path.exists():
            raise UserError(f"seed file {path} does not exist")
        files.extend(_folder_files(path) if path.is_dir() else [path])
    first = {}  # a file named twice (again by a pattern, or by another path to it) is read once
    for file in files:
        first.setdefault(file.resolve(), file)
    return list(first.values())


def _matches(pattern: str) -> list[Path]:
    """The seed files a glob pattern names, in name order (files only, as DuckDB and `datasets` match)."""
    files = [p for p in map(Path, sorted(glob.glob(pattern, recursive=True))) if p.is_file() and _is_seed_file(p)]
    if not files:
        raise UserError(f"no seed file matches {pattern} ({SEED_TYPES})")
    return files


def _is_seed_file(path: Path) -> bool:
    try:
        detect_format(path)
    except UserError:
        return False
    return path.name not in METADATA and not any(part.startswith(".") for part in path.parts[-2:])


def _split(path: Path, folder: Path) -> str:
    """The split a file belongs to, from its name or the folders under `folder` ('' when none says)."""
    for part in reversed(path.relative_to(folder).parts):
        for split in SPLITS:
            name = part.lower()
            if name == split or name.startswith((f"{split}-", f"{split}_", f"{split}.")):
                return split
    return ""


def left_out_splits(paths: list[Path]) -> list[str]:
    """One line for each folder among `paths` of which only the train split is read, naming what is left out."""
    notes = []
    for folder in (p for p in paths if p.is_dir()):
        splits = Counter(split or "other" for split, _ in _split_files(folder))
        if "train" in splits and len(splits) > 1:
            left = ", ".join(f"{split} ({n} file{'s' * (n > 1)})" for split, n in splits.items() if split != "train")
            notes.append(f"note: {folder}: only its train split is read, {left} left out; name those files, or a "
                         f"glob pattern, to read them")
    return notes


def _folder_files(folder: Path) -> list[Path]:
    files = _split_files(folder)
    return [f for split, f in files if split == "train"] or [f for _, f in files]


def _split_files(folder: Path) -> list[tuple[str, Path]]:
    """A folder's seed files in reading order, each with its split ('' where no name places it in one)."""
    if (folder / "dataset_dict.json").is_file():  # datasets.DatasetDict.save_to_disk: one folder per split
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        files = []
        for split in splits:
            try:
                files += [(split, f) for f in _folder_files(folder / split)]
            except UserError:  # a split removed from disk is not read anyway, beside a train split
                if split == "train" or "train" not in splits:
                    raise
        return files
    if (folder / "state.json").is_file():  # datasets.Dataset.save_to_disk: its Arrow files, in order
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        return [("", folder / f["filename"]) for f in state.get("_data_files", [])]
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _is_seed_file(p))
    if not files:
        raise UserError(f"{folder}: no seed files in this folder ({SEED_TYPES})")
    return [(_split(f, folder), f) for f in files]
