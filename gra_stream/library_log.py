"""Quiet by default: what the libraries print (vLLM, torch, transformers, Ray: warnings, notes, weight-loading
bars) goes to a log file in the run directory, and only gra-stream's own lines reach the terminal.

The redirect is at the file-descriptor level, so it catches C++ code and the worker processes too (they
inherit descriptors 1 and 2); gra-stream writes its own lines to copies of the terminal's descriptors.
"""
from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO


def _own_copy(stream: TextIO, fd: int) -> tuple[TextIO, bool]:
    """A stream to the terminal that survives redirecting `fd`: a duplicate of the descriptor where `stream`
    writes to it, else `stream` itself (a test runner's capture, say)."""
    try:
        if stream.fileno() == fd:
            return open(os.dup(fd), "w", buffering=1, encoding=stream.encoding or "utf-8",
                        errors="backslashreplace"), True
    except (AttributeError, ValueError, io.UnsupportedOperation):
        pass
    return stream, False


@contextmanager
def library_output_to(log: Path | None) -> Iterator[tuple[TextIO, TextIO]]:
    """Send descriptors 1 and 2 to `log` (appended) for the duration; yields (out, err) streams to the
    terminal for gra-stream's own output. With `log` None, nothing is redirected (`--verbose`)."""
    target = None
    if log is not None:
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            target = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError:  # the run itself will say why it cannot write there
            target = None
    if target is None:
        yield sys.stdout, sys.stderr
        return
    out, close_out = _own_copy(sys.stdout, 1)
    err, close_err = _own_copy(sys.stderr, 2)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(target, 1)
    os.dup2(target, 2)
    os.close(target)
    try:
        yield out, err
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        for stream, own in ((out, close_out), (err, close_err)):
            if own:
                stream.close()
