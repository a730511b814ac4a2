class UserError(Exception):
    """A mistake the user can fix (bad input, bad config, wrong directory): shown as one line, no traceback."""
