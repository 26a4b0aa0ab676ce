"""User-facing errors: the CLI, the API and the demo print these as one clear message, never a stack trace."""


class HyperBagelError(Exception):
    """An error caused by the user's input or files, with a message meant for people."""
