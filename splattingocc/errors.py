"""The error type of mistakes a user can fix (a path, an option, a config key)."""


class UserError(Exception):
    """An error the user can fix; the tools print it as one line, without a traceback."""
