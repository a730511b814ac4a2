"""Progress lines: a live rich bar per stage on a terminal, plain lines elsewhere, nothing when quiet."""
import io
import re

from gra_stream.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True

    def screen(self) -> list[str]:
        """The lines left on the screen: colours and cursor codes dropped, an erased line's text gone."""
        text = re.sub(r"\x1b\[(\?25[lh]|[0-9;]*m)", "", self.getvalue())
        return [line.split("\r\x1b[2K")[-1] for line in text.split("\n") if line.split("\r\x1b[2K")[-1]]


def run_stages(progress):
    ingest = progress.stage("ingest", 0)
    ingest.close()  # nothing ingested: no line
    bar = progress.stage("review", 4)
    bar.advance(1, tokens=50)
    progress.say("note: something to say while a stage runs")
    bar.advance(3, tokens=150)
    bar.close()


def test_plain_lines_where_there_is_no_terminal():
    out = io.StringIO()
    run_stages(Progress(stream=out))
    lines = out.getvalue().splitlines()
    assert lines[0] == "note: something to say while a stage runs"
    assert lines[1].startswith("review     4/4 rows") and "tok/s" in lines[1] and "ETA 0:00:00" in lines[1]
    assert len(lines) == 2, "the idle ingest leaves no line"


def test_a_live_bar_on_a_terminal():
    out = Terminal()
    progress = Progress(stream=out)
    run_stages(progress)
    note, review = out.screen()
    assert note == "note: something to say while a stage runs"
    assert review.startswith("review") and "4/4 rows" in review and "rows/s" in review and "tok/s" in review
    assert progress.running is None, "the live display is stopped with its stage"


def test_quiet_prints_nothing():
    for out in (io.StringIO(), Terminal()):
        run_stages(Progress(quiet=True, stream=out))
        assert out.getvalue() == ""
