"""Errors that are the user's to fix: the CLI prints their one-line message and
exits with code 2 instead of showing a traceback."""


class UserError(Exception):
    """Bad input or bad config; the message is one line that says what to fix."""


class ConfigError(UserError, ValueError):
    """A bad key, type or value in a config file or ``--set`` override."""
