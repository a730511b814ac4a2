class UserError(Exception):
    """A mistake the user can fix (bad input, bad config, wrong directory): shown as one line, no traceback."""


def sql_message(error: Exception) -> str:
    """A DuckDB error on one line: its first paragraph, which holds DuckDB's hints ('Did you mean
    "samples"?', the candidate columns), without the query it quotes after a blank line."""
    return " ".join(str(error).strip().split("\n\n")[0].split())


class Interrupted(Exception):
    """SIGTERM or Ctrl-C: the run stopped at a batch boundary."""
