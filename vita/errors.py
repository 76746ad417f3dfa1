"""Exceptions that vita reports as one clear line instead of a traceback."""


class VitaError(Exception):
    """Base class: an error whose message says what went wrong and how to fix it."""


class ConfigError(VitaError):
    """A bad config value, key or registry name."""


class DataError(VitaError):
    """A bad sample or data file."""


class CheckpointError(VitaError):
    """A missing, damaged or incompatible checkpoint."""
