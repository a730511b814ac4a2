"""Progress lines on stderr: one bar per stage with rows, tokens/s and ETA; silent with --quiet.

On a terminal the bar redraws in place; elsewhere (CI logs) a line is printed at most every 10 seconds
and when the stage ends.
"""
from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, *, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.mid_line = False  # a bar is drawn in place on the terminal's last line

    def say(self, message: str) -> None:
        if not self.quiet:
            print(("\n" if self.mid_line else "") + message, file=self.stream, flush=True)
            self.mid_line = False

    def stage(self, name: str, total: int) -> "StageBar":
        return StageBar(self, name, total)


class StageBar:
    def __init__(self, progress: Progress, name: str, total: int):
        self.p, self.name, self.total = progress, name, total
        self.done = self.tokens = 0
        self.started = self.last = time.monotonic()
        self._draw(force=True)

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.done += rows
        self.tokens += tokens
        self._draw()

    def close(self) -> None:
        self._draw(force=True, end=True)

    def line(self) -> str:
        elapsed = max(1e-9, time.monotonic() - self.started)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0
        if not self.total:
            return f"{self.name:<10} {self.done} rows  {rate:8.1f} rows/s  elapsed {_clock(elapsed)}"
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        tokens = f"  {self.tokens / elapsed:7.1f} tok/s" if self.tokens else ""
        return (f"{self.name:<10} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} rows"
                f"  {rate:8.1f} rows/s{tokens}  elapsed {_clock(elapsed)}  ETA {_clock(eta)}")

    def _draw(self, force: bool = False, end: bool = False) -> None:
        if self.p.quiet:
            return
        now = time.monotonic()
        if self.p.tty:
            if force or now - self.last >= 0.2:
                print("\r" + self.line(), end="\n" if end else "", file=self.p.stream, flush=True)
                self.p.mid_line = not end
                self.last = now
        elif end or (now - self.last >= 10 and self.done < self.total):
            print(self.line(), file=self.p.stream, flush=True)
            self.last = now
