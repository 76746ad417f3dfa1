"""Exceptions that vita reports as one clear line instead of a traceback."""


class VitaError(Exception):
    """Base class: an error whose message says what went wrong and how to fix it."""


class ConfigError(VitaError):
    """A bad config value, key or registry name."""


class DataError(VitaError):
    """A bad sample or data file."""


class CheckpointError(VitaError):
    """A missing, damaged or incompatible checkpoint."""


def one_line_errors(main):
    """Decorate a command's ``main``: a :class:`VitaError` becomes one ``error: ...`` line on stderr and exit
    code 2, not a traceback (other exceptions are bugs and keep theirs)."""
    import functools
    import sys

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except VitaError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper
