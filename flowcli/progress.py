"""Progress and messages on stderr: a rich progress bar on a terminal, plain periodic lines otherwise,
nothing with ``--quiet``. stdout is never touched: it carries data only."""

from __future__ import annotations

import sys
import time
from typing import Any


class Reporter:
    def __init__(self, quiet: bool = False, stream: Any = None, plain_every: float = 5.0) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.interactive = not quiet and self.stream.isatty()
        self.plain_every = plain_every
        self._progress: Any = None
        self._task: Any = None
        self._last_line = 0.0

    def message(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        """A rich table on stderr (plain text, no colour, when stderr is not a terminal)."""
        if self.quiet:
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left", pad_edge=False)
        for name in header:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(*row)
        Console(file=self.stream, width=max(100, Console(file=self.stream).width), highlight=False).print(table)

    def start(self, total: int, description: str) -> None:
        if not self.interactive:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, status="")

    def epoch(self, report: Any) -> None:
        status = f"train {report.train_nll:.4f}  val {report.val_nll:.4f}  best {report.best_val_nll:.4f}"
        if self._progress is not None:
            self._progress.update(self._task, completed=report.epoch, status=status)
            return
        now = time.monotonic()
        if report.epoch == 1 or now - self._last_line >= self.plain_every or report.epoch == report.epochs:
            self._last_line = now
            self.message(f"epoch {report.epoch}/{report.epochs}  {status}  ({report.seconds:.2f} s/epoch)")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
