"""Progress: one view of the whole run (a headline per finished wave, a row per stage summed over the
waves); live on a terminal, plain lines elsewhere, nothing when quiet."""
import io
import re

from gra_stream import progress as progress_module
from gra_stream.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True

    def screen(self) -> list[str]:
        """The lines left on the screen: colours and cursor codes dropped, a redrawn view's old frames gone."""
        text = re.sub(r"\x1b\[(\?25[lh]|[0-9;]*m)", "", self.getvalue())
        frames = re.split(r"\r\x1b\[2K|\x1b\[1A\x1b\[2K", text)
        return [line for line in frames[-1].split("\n") if line] if frames else []


def run_two_waves(progress):
    ingest = progress.stage("ingest", 0)
    ingest.close()  # nothing ingested: no row
    for wave, rows in ((1, 4), (2, 2)):
        bar = progress.stage("review", rows)
        bar.advance(1, tokens=50)
        if wave == 1:
            progress.say("note: something to say while a stage runs")
        bar.advance(rows - 1, tokens=150)
        bar.close()
        progress.wave(f"wave {wave}/2", 10 * wave, 20, 3 * wave)
    progress.close()


def test_plain_lines_where_there_is_no_terminal():
    out = io.StringIO()
    run_two_waves(Progress(stream=out))
    lines = out.getvalue().splitlines()
    assert lines[0] == "note: something to say while a stage runs"
    assert lines[1].startswith("wave 1/2  10/20 seeds through every stage  3 samples kept  ETA ")
    assert lines[2].startswith("wave 2/2  20/20 seeds through every stage  6 samples kept  ETA 0:00:00")
    assert lines[3].startswith("review     6/6 rows") and "rows/s" in lines[3] and "tok/s" in lines[3]
    assert len(lines) == 4, "the idle ingest leaves no line"


def test_a_plain_line_of_every_stage_at_most_every_period(monkeypatch):
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)
    out = io.StringIO()
    progress = Progress(stream=out)
    progress.stage("profile", 3).advance(3)
    progress.stage("review", 5).advance(2)
    assert out.getvalue().splitlines()[-1].endswith("profile 3/3  review 2/5")


def test_one_live_view_on_a_terminal():
    out = Terminal()
    progress = Progress(stream=out)
    run_two_waves(progress)
    screen = out.screen()
    assert "note: something to say while a stage runs" in out.getvalue()
    assert screen[0].startswith("wave 2/2  20/20 seeds through every stage  6 samples kept"), screen
    review = screen[1]
    assert review.startswith("review") and "6/6 rows" in review and "rows/s" in review and "tok/s" in review
    assert len(screen) == 2, "one row per stage that did something, under the headline"
    assert progress.live is None, "the live view is stopped with the run"


def test_quiet_prints_nothing():
    for out in (io.StringIO(), Terminal()):
        run_two_waves(Progress(quiet=True, stream=out))
        assert out.getvalue() == ""


def test_a_finished_pass_of_unknown_size_reads_as_finished():
    out = Terminal()
    progress = Progress(stream=out)
    ingest = progress.stage("ingest", 0)  # the ingest does not know its rows in advance
    ingest.advance(52002)
    ingest.close()
    progress.stage("profile", 8).advance(3)
    progress.close()
    ingest_row = out.screen()[0]
    assert ingest_row.startswith("ingest") and "52002/52002 rows" in ingest_row, out.screen()


def test_the_live_eta_counts_down_between_waves(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    out = Terminal()
    progress = Progress(stream=out)
    bar = progress.stage("profile", 40)
    clock[0] = 110.0
    bar.advance(10)
    progress.wave("wave 1/3", 10, 40, 2)  # a quarter of the corpus in 10 s: 30 s to go
    shown = []
    for now in (110.0, 125.0, 150.0):
        clock[0] = now
        progress.live.refresh()
        shown.append(out.screen()[0].rsplit("ETA ", 1)[1])
    progress.close()
    assert shown == ["0:00:30", "0:00:15", "0:00:00"]


def test_the_eta_counts_the_rounds_still_to_come(monkeypatch):
    # Before, the last wave of round 1 of 2 said ETA 0:00:00 with a whole round to go.
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = Progress(stream=out)
    clock[0] = 120.0
    progress.wave("round 1, wave 2/2", 40, 40, 9, round=1, rounds=2)  # half the run in 20 s
    clock[0] = 130.0
    progress.wave("round 2, wave 1/2", 10, 40, 12, round=2, rounds=2)  # five eighths in 30 s
    text = out.getvalue()
    assert "round 1, wave 2/2  40/40 seeds through every stage  9 samples kept  ETA 0:00:20" in text, text
    assert "round 2, wave 1/2  10/40 seeds through every stage  12 samples kept  ETA 0:00:18" in text, text
