"""Exceptions that vita reports as one clear line instead of a traceback."""


class VitaError(Exception):
    """Base class: an error whose message says what went wrong and how to fix it."""


class ConfigError(VitaError):
    """A bad config value, key or registry name."""


class DataError(VitaError):
    """A bad sample or data file."""


class CheckpointError(VitaError):
    """A missing, damaged or incompatible checkpoint."""


def one_line_errors(main=None, *, log=None, report=None, exit: bool = False):
    """Decorate a command's ``main``: a :class:`VitaError` becomes one ``error: ...`` line on stderr and exit
    code 2, not a traceback (other exceptions are bugs and keep theirs).

    Args:
        log: a logger that records the error too (a run's log file).
        report: says the error instead of the ``error:`` line and ``log`` (a training job: once on the console,
            once in its log file, no empty run dir left; :func:`vita.job_errors.report_job_error`).
        exit: ``sys.exit(2)`` instead of returning 2 (a Hydra task, whose return value goes to sweepers).

    ``VITA_RAISE=1`` re-raises it (a traceback for debugging).
    """
    import functools
    import os
    import sys

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except VitaError as e:
                if report is not None:
                    report(e)
                else:
                    if log is not None:
                        log.error("%s", e)
                    print(f"error: {e}", file=sys.stderr, flush=True)
                if os.environ.get("VITA_RAISE"):
                    raise
                if exit:
                    sys.exit(2)
                return 2

        return wrapper

    return deco(main) if main is not None else deco
