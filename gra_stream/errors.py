class UserError(Exception):
    """A mistake the user can fix (bad input, bad config, wrong directory): shown as one line, no traceback."""


class Interrupted(Exception):
    """SIGTERM or Ctrl-C: the run stopped at a batch boundary."""
