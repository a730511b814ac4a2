"""Progress on stderr, one line per stage: rows done of the stage's pending rows, rows/s, output tokens/s,
elapsed time and ETA. On a terminal each stage is a live bar drawn by rich (a finished stage stays as a
line, messages print above the running bar); elsewhere (CI logs, files) a plain line is printed at most
every 10 seconds and when the stage ends. Silent with `--quiet`."""
from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

PLAIN_EVERY_S = 10.0


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, *, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.running: StageBar | None = None  # the stage whose live bar is on the terminal

    def say(self, message: str, *, even_if_quiet: bool = False) -> None:
        if self.quiet and not even_if_quiet:
            return
        if self.running is not None and self.running.live is not None:
            self.running.live.console.print(message, markup=False, highlight=False)  # above the live bar
        else:
            print(message, file=self.stream, flush=True)

    def stage(self, name: str, total: int) -> "StageBar":
        return StageBar(self, name, total)


class StageBar:
    def __init__(self, progress: Progress, name: str, total: int):
        self.p, self.name, self.total = progress, name, total
        self.done = self.tokens = 0
        self.started = self.last = time.monotonic()
        self.live: RichProgress | None = None
        if progress.tty and not progress.quiet:
            self.live = RichProgress(TextColumn(f"{name:<10}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                                     TextColumn("rows  {task.fields[rate]}"), TimeElapsedColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn(),
                                     console=Console(file=progress.stream), transient=False)
            self._task = self.live.add_task(name, total=total or None, rate="")
            self.live.start()
            progress.running = self

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.done += rows
        self.tokens += tokens
        if self.live is not None:
            self.live.update(self._task, advance=rows, rate=self._rates())
        elif not self.p.quiet and time.monotonic() - self.last >= PLAIN_EVERY_S and self.done < self.total:
            self._plain()

    def close(self) -> None:
        """End the stage's line; a stage of no known size that did nothing leaves no line."""
        idle = not self.done and not self.total
        if self.live is not None:
            if idle:
                self.live.remove_task(self._task)
            else:
                self.live.update(self._task, rate=self._rates())
            self.live.stop()
            self.p.running = None
        elif not self.p.quiet and not idle:
            self._plain()

    def _rates(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        tokens = f"  {self.tokens / elapsed:,.1f} tok/s" if self.tokens else ""
        return f"{self.done / elapsed:,.1f} rows/s{tokens}"

    def line(self) -> str:
        """The stage's state as one plain line (what a non-terminal gets)."""
        elapsed = max(1e-9, time.monotonic() - self.started)
        rate = self.done / elapsed
        if not self.total:
            return f"{self.name:<10} {self.done} rows  {rate:8.1f} rows/s  elapsed {_clock(elapsed)}"
        eta = (self.total - self.done) / rate if rate > 0 else 0
        tokens = f"  {self.tokens / elapsed:7.1f} tok/s" if self.tokens else ""
        return (f"{self.name:<10} {self.done}/{self.total} rows  {rate:8.1f} rows/s{tokens}  "
                f"elapsed {_clock(elapsed)}  ETA {_clock(eta)}")

    def _plain(self) -> None:
        print(self.line(), file=self.p.stream, flush=True)
        self.last = time.monotonic()
