"""Progress on stderr: one view of the whole run. A headline (the wave, seeds through every stage,
samples kept so far, ETA for the corpus) and one row per stage (rows done of the rows pending so far,
rows/s, output tokens/s), summed over the waves. On a terminal it is a live rich display, with messages
printed above it; elsewhere (CI logs, files) the same state is printed as plain lines at most every 10
seconds, and per stage when the run ends. Silent with `--quiet`."""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn
from rich.text import Text

PLAIN_EVERY_S = 10.0


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class StageCount:
    """One stage's rows and output tokens over every pass of the run so far, and the time its passes took
    (the rates are the stage's own pace, not diluted by the other stages' turns)."""
    name: str
    total: int = 0
    done: int = 0
    tokens: int = 0
    busy_s: float = 0.0
    opened: float | None = None  # when the pass in progress began
    task: int | None = None      # its row in the live view

    def elapsed(self) -> float:
        return max(1e-9, self.busy_s + (time.monotonic() - self.opened if self.opened is not None else 0.0))

    def rates(self) -> str:
        tokens = f"  {self.tokens / self.elapsed():,.1f} tok/s" if self.tokens else ""
        return f"{self.done / self.elapsed():,.1f} rows/s{tokens}"

    def line(self) -> str:
        """The stage as one plain line."""
        elapsed = self.elapsed()
        rows = f"{self.done}/{self.total} rows" if self.total else f"{self.done} rows"
        tokens = f"  {self.tokens / elapsed:7.1f} tok/s" if self.tokens else ""
        return f"{self.name:<10} {rows}  {self.done / elapsed:8.1f} rows/s{tokens}  busy {_clock(elapsed)}"


class Progress:
    def __init__(self, *, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = self.last = time.monotonic()
        self.stages: dict[str, StageCount] = {}
        self.headline = ""
        self.eta_at: float | None = None  # when the corpus is expected to be through, as of the last wave
        self._bars: RichProgress | None = None
        self.live: Live | None = None  # the live view, while a run shows one
        self.lock = threading.RLock()  # overlapping passes report from threads of their own

    def say(self, message: str, *, even_if_quiet: bool = False) -> None:
        if self.quiet and not even_if_quiet:
            return
        if self.live is not None:
            self.live.console.print(message, markup=False, highlight=False)  # above the live view
        else:
            print(message, file=self.stream, flush=True)

    def stage(self, name: str, total: int) -> "StageBar":
        """A pass of stage `name` over `total` pending rows (0: not known)."""
        with self.lock:
            return self._stage(name, total)

    def _stage(self, name: str, total: int) -> "StageBar":
        count = self.stages.get(name)
        if count is None:
            count = self.stages[name] = StageCount(name)
        count.total += total
        count.opened = time.monotonic()
        if self.tty and not self.quiet:
            self._show(count)
        return StageBar(self, count)

    def wave(self, label: str, seeds_done: int, seeds: int, kept: int, *, round: int = 1, rounds: int = 1) -> None:
        """A wave (`label`: "wave 3/9") went through every stage: `seeds_done` of the corpus's `seeds` are
        through round `round` of `rounds`. The ETA assumes the rest, later rounds included, goes at the pace
        so far."""
        with self.lock:
            self._wave(label, seeds_done, seeds, kept, (round - 1) * seeds + seeds_done, rounds * seeds)

    def _wave(self, label: str, seeds_done: int, seeds: int, kept: int, done: int, total: int) -> None:
        now = time.monotonic()
        self.eta_at = now + ((now - self.started) * (total - done) / done if done else 0)
        self.headline = f"{label}  {seeds_done:,}/{seeds:,} seeds through every stage  {kept:,} samples kept"
        if self.live is None and not self.quiet:
            print(self._headline(), file=self.stream, flush=True)

    def _headline(self) -> str:
        """The headline with the time left until `eta_at`: the live view counts it down between waves."""
        return f"{self.headline}  ETA {_clock(self.eta_at - time.monotonic())}"

    def close(self) -> None:
        """End the view: on a terminal the live view stays as it is; elsewhere one line per stage."""
        if self.live is not None:
            self.live.stop()  # drawn one last time
            self.live = None
        elif not self.quiet and self.stages:
            for count in self.stages.values():
                if count.done or count.total:
                    print(count.line(), file=self.stream, flush=True)

    def _show(self, count: StageCount) -> None:
        if self.live is None:
            self._bars = RichProgress(TextColumn("{task.description:<10}"), BarColumn(bar_width=24),
                                      MofNCompleteColumn(), TextColumn("rows  {task.fields[rate]}"),
                                      TimeElapsedColumn(), console=Console(file=self.stream), auto_refresh=False)
            # drawn four times a second from the state at that moment
            self.live = Live(get_renderable=self._view, console=self._bars.console, refresh_per_second=4)
            self.live.start()
        if count.task is None:
            count.task = self._bars.add_task(count.name, total=count.total or None, rate="")
        else:
            self._bars.update(count.task, total=count.total or None)

    def _view(self):
        return Group(Text(self._headline()), self._bars) if self.headline else self._bars

    def _advanced(self, count: StageCount) -> None:
        if self._bars is not None and count.task is not None:
            self._bars.update(count.task, completed=count.done, rate=count.rates())
        elif not self.quiet and not self.tty and time.monotonic() - self.last >= PLAIN_EVERY_S:
            self._plain()

    def _plain(self) -> None:
        """One line of every stage's state so far, for a log."""
        stages = "  ".join(f"{c.name} {c.done:,}" + (f"/{c.total:,}" if c.total else "")
                           for c in self.stages.values() if c.total or c.done)
        print(f"[{_clock(time.monotonic() - self.started)}] {stages}", file=self.stream, flush=True)
        self.last = time.monotonic()


class StageBar:
    """What a stage pass reports its rows and tokens to."""

    def __init__(self, progress: Progress, count: StageCount):
        self.p, self.count = progress, count

    def advance(self, rows: int, tokens: int = 0) -> None:
        with self.p.lock:
            self.count.done += rows
            self.count.tokens += tokens
            self.p._advanced(self.count)

    def close(self) -> None:
        with self.p.lock:
            self._close()

    def _close(self) -> None:
        """A pass of no known size that did nothing leaves no row; one that did something (the ingest) shows
        what it did as its total, so that its row reads as finished and its clock stops."""
        self.count.busy_s, self.count.opened = self.count.elapsed(), None
        if self.p._bars is None or self.count.task is None or self.count.total:
            return
        if self.count.done:
            self.p._bars.update(self.count.task, total=self.count.done)
        else:
            self.p._bars.remove_task(self.count.task)
            self.count.task = None
