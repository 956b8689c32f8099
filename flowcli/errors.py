"""User-facing errors. The CLI turns each into one line, ``Error: <message>``, and exit code 1.

Anything that is not a ``FlowcliError`` is a bug and keeps its traceback.
"""

from typing import Any


class FlowcliError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(FlowcliError):
    """The YAML config is malformed or names an unknown key, type or invalid value."""


class DataError(FlowcliError):
    """The input table cannot be read or does not match what the model expects."""


class NoDataRows(DataError):
    """A table with its columns but no data rows. Where rows are needed (``fit``, ``--given-file``) it is
    an error; the commands that map rows to rows (``logprob``, ``encode``, ``decode``, ``impute``) map it to
    an empty table with their output's columns, as a pipeline whose filter kept only the header expects.
    ``frame``: the empty table, with the columns (and the types, where the file has them) it read."""

    def __init__(self, source: str, frame: Any) -> None:
        super().__init__(f"{source}: the table has a header but no data rows")
        self.frame = frame


class CheckpointError(FlowcliError):
    """The checkpoint is missing, corrupt, from an incompatible version, or unsafe."""


class TrainingError(FlowcliError):
    """Training failed in a way the user can act on (e.g. the loss diverged)."""


class ReportedFailure(FlowcliError):
    """A failure already reported on stderr by another process (a worker of a distributed fit): the
    CLI exits with ``exit_code`` and prints nothing more."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"a worker process failed (exit code {exit_code})")
        self.exit_code = exit_code


def shown(value: object) -> str:
    """A value as an error message shows it: ``repr`` of the plain Python value, so a numpy scalar reads
    as what the user wrote (``181.5``, ``'abc'``), not as numpy 2's ``np.float64(181.5)``."""
    item = getattr(value, "item", None)
    if type(value).__module__ == "numpy" and callable(item):
        value = item()
    return repr(value)


def raised_by_interrupt(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a KeyboardInterrupt or was raised because of one: along the chain a traceback shows
    (the cause, else the context unless ``raise ... from None`` suppressed it). A signal whose handler raises
    KeyboardInterrupt can land inside an import or a library call and come out wrapped: while a class is
    created, ``__set_name__`` turns it into a RuntimeError. It is still the stop asked for. An exit that
    already reported the stop (``raise typer.Exit(...) from None``) is not one."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ if exc.__cause__ is not None else None if exc.__suppress_context__ else exc.__context__
    return False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that what is being written is abandoned cleanly
    (no temporary file left behind); the command exits 143 instead of 130."""
