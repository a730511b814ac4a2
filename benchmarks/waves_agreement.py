"""How far the diversity walk in waves (the default) is from the paper's walk over the whole round.

A fake-backend run with one wave per round (`[waves] first_seeds = 0`) is copied, and the copy's
diversity filter (and the two stages after it) run again with the default waves, over the very same
candidates: the same generations, reviews and verdicts. Each wave is walked in descending committee
mean against everything kept before; the whole-round walk takes every candidate in that order at once.
Prints how many of the filter's decisions differ. (A whole run with the default waves differs from a
one-wave run earlier than this: a wave's generations draw their examples from the seeds of the waves
so far; docs/streaming.md.)

    python benchmarks/waves_agreement.py                  # 100k seeds
    python benchmarks/waves_agreement.py --size 20000
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import build_corpus, fake_config  # noqa: E402

from gra_stream.config import load_config  # noqa: E402
from gra_stream.progress import Progress  # noqa: E402
from gra_stream.runner import run_pipeline  # noqa: E402
from gra_stream.stages import annotate, diversity, finalize  # noqa: E402
from gra_stream.store import Store  # noqa: E402
from gra_stream.waves import plan  # noqa: E402


def config(path: Path, waves: str):
    return load_config(fake_config(path, tables=waves))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gra-waves-agreement-"))
    work.mkdir(parents=True, exist_ok=True)
    seeds = build_corpus(args.size, work / f"seeds_{args.size}.jsonl")
    whole, waved = work / "one_wave", work / "waves"
    for d in (whole, waved):
        shutil.rmtree(d, ignore_errors=True)
    run_pipeline([seeds], whole, config(work / "one_wave.toml", "[waves]\nfirst_seeds = 0\n"),
                 progress=Progress(quiet=True))
    shutil.copytree(whole, waved)
    default = config(work / "default.toml", "")
    run_pipeline([seeds], waved, default, progress=Progress(quiet=True),
                 stages=[diversity.STAGE, annotate.STAGE, finalize.STAGE])
    waves = len(plan(Store(waved).connect(), default.waves.first_seeds))
    both = Store(whole).scan("diversity").select("id", "kept").join(
        Store(waved).scan("diversity").select("id", "kept"), on="id", suffix="_waves").collect()
    total, differ = both.height, int((both["kept"] != both["kept_waves"]).sum())
    kept_whole, kept_waves = int(both["kept"].sum()), int(both["kept_waves"].sum())
    print(f"{args.size:,} fake seeds; {total:,} candidates walked; {waves} waves by default")
    print(f"whole-round walk keeps {kept_whole:,}, the walk in waves {kept_waves:,}; "
          f"{differ:,} of {total:,} decisions differ ({differ / total:.3%})")


if __name__ == "__main__":
    main()
