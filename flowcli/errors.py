"""User-facing errors. The CLI turns each into one line, ``Error: <message>``, and exit code 1.

Anything that is not a ``FlowcliError`` is a bug and keeps its traceback.
"""


class FlowcliError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(FlowcliError):
    """The YAML config is malformed or names an unknown key, type or invalid value."""


class DataError(FlowcliError):
    """The input table cannot be read or does not match what the model expects."""


class CheckpointError(FlowcliError):
    """The checkpoint is missing, corrupt, from an incompatible version, or unsafe."""


class TrainingError(FlowcliError):
    """Training failed in a way the user can act on (e.g. the loss diverged)."""
