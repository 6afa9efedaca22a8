"""User-facing errors: the CLI prints them as one line and exits non-zero, never a traceback."""


class BnnctlError(Exception):
    """A mistake in the user's input or environment, reported as one clear line."""

    exit_code = 1


class DataError(BnnctlError):
    """A file exists but its content is not what was expected (wrong shape, corrupt, ...)."""
