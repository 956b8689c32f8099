"""Progress and messages on stderr: a rich progress bar on a terminal, plain periodic lines otherwise,
nothing with ``--quiet``. stdout is never touched: it carries data only.

A fit reports in phases (the discrete part, the conditional-questions network, the epochs, the final
scoring), and within each: on a terminal a spinner or a bar that moves (the epoch's steps, rows/s, time
left); otherwise a plain line whenever ``status_every`` seconds passed without one while something runs,
so a log is never silent for long (a 100,000-row table spends minutes before its first epoch ends).
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

REFRESH = 0.1  # seconds between two updates of a bar or spinner on a terminal (rich redraws at 10 Hz)
# Seconds without a line after which a running phase or epoch prints one on a plain stream. Checked after
# each step, so a step or a validation pass may add to it: 8 keeps the gaps under 10 s (with 10, one gap was
# 11.7 s on the 100,000-row table of benchmarks/mixed_fit.py: the check came after a validation pass).
STATUS_EVERY = 8.0


def duration(seconds: float) -> str:
    """``1:02:03``, ``2:05``, ``0:07``: seconds as the clock of a progress line."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Reporter:
    """Messages, tables and progress of a command on ``stream`` (stderr).

    ``plain_every``: the least seconds between two epoch lines when ``stream`` is not a terminal;
    ``status_every``: the most seconds without a line while a phase or an epoch runs (a status line
    then: the phase's state, or the epoch's step, rows/s and time left; default ``STATUS_EVERY``).
    ``clock``: seconds, monotonic (a test passes a fake one)."""

    def __init__(
        self,
        quiet: bool = False,
        stream: Any = None,
        plain_every: float = 5.0,
        status_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.interactive = not quiet and self.stream.isatty()
        self.plain_every, self.clock = plain_every, clock
        self.status_every = STATUS_EVERY if status_every is None else status_every
        self._progress: Any = None  # the bar of the epochs (terminal)
        self._task: Any = None
        self._steps_task: Any = None
        self._spinner: Any = None  # the spinner of a phase (terminal)
        self._last_line = clock()
        self._last_epoch_line = -math.inf
        self._last_refresh = -math.inf
        self._epochs = self._steps = 0
        self._epoch_started = clock()
        self._phase_started = clock()

    def message(self, text: str) -> None:
        if self.quiet:
            return
        live = self._progress or self._spinner
        if live is not None:  # printed above the bar, which stays at the bottom
            live.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)
        self._last_line = self.clock()

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
        self._last_line = self.clock()

    # --- phases (work before and after the epochs) ----------------------------------------------------------

    @contextlib.contextmanager
    def slow(self, text: str) -> Iterator[None]:
        """``text ...`` once the block has run for ``status_every`` seconds (from a timer thread): work that
        reports no progress of its own, and usually ends sooner (reading a table: an error in it is then
        the only line)."""
        timer = threading.Timer(self.status_every, self.message, [f"{text} ..."]) if not self.quiet else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            yield
        finally:
            if timer is not None:
                timer.cancel()

    def phase(self, text: str) -> None:
        """A phase starts: ``text ...`` (and a spinner after it on a terminal)."""
        if self.quiet:
            return
        self.message(f"{text} ...")
        self._phase_started = self.clock()
        if self.interactive and self._progress is None:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._spinner = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._spinner.start()
            self._spinner.add_task("", total=None)

    def status(self, text: str) -> None:
        """The state of the running phase (called often: it costs a clock reading unless a line is due)."""
        if self.quiet:
            return
        now = self.clock()
        if self._spinner is not None:
            if now - self._last_refresh >= REFRESH:
                self._last_refresh = now
                self._spinner.update(self._spinner.task_ids[0], description=text)
        elif now - self._last_line >= self.status_every:
            self.message(f"  {text}  ({duration(now - self._phase_started)} so far)")

    def phase_done(self, text: str) -> None:
        """The phase ended: its spinner goes, ``text`` (what it achieved) stays."""
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
        if text:
            self.message(text)

    # --- epochs --------------------------------------------------------------------------------------------

    def start(self, total: int, description: str, steps: int = 0, batch: int = 0) -> None:
        """The epochs start: ``total`` of them (an upper bound), of ``steps`` steps of ``batch`` rows."""
        if self.quiet:
            return
        self._epochs = total
        if steps:
            self.message(f"training: up to {total} epochs of {steps} steps of {batch} rows")
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
        if steps:
            self._steps_task = self._progress.add_task("epoch 1", total=steps, status="")

    def step(self, epoch: int, step: int, steps: int, rows: int) -> None:
        """Step ``step`` of ``steps`` of epoch ``epoch`` is done (0: the epoch starts), ``rows`` rows so far in
        it. Called on every step, so it costs a clock reading unless a line or a redraw is due."""
        if self.quiet:
            return
        now = self.clock()
        if step == 0:
            self._epoch_started, self._steps = now, steps
            if self._progress is not None and self._steps_task is not None:
                self._progress.reset(self._steps_task, total=steps, description=f"epoch {epoch}", status="")
            return
        if self._progress is None and now - self._last_line < self.status_every:
            return
        if self._progress is not None and now - self._last_refresh < REFRESH:
            return
        self._last_refresh = now
        elapsed = max(now - self._epoch_started, 1e-9)
        rate, left = rows / elapsed, elapsed * (steps - step) / step
        if self._progress is not None and self._steps_task is not None:
            self._progress.update(
                self._steps_task,
                description=f"epoch {epoch}",
                completed=step,
                total=steps,
                status=f"{rate:,.0f} rows/s",
            )
        elif self._progress is None:
            self.message(
                f"epoch {epoch}/{self._epochs}  step {step}/{steps}  {rate:,.0f} rows/s  {duration(left)} left in the epoch"
            )

    def epoch(self, report: Any) -> None:
        status = f"train {report.train_nll:.4f}  val {report.val_nll:.4f}  best {report.best_val_nll:.4f}"
        if self._progress is not None:
            self._progress.update(self._task, completed=report.epoch, status=status)
            if self._steps_task is not None:  # its last redraw may have been before the last steps
                self._progress.update(self._steps_task, completed=self._steps)
            return
        now = self.clock()
        if report.epoch == 1 or now - self._last_epoch_line >= self.plain_every or report.epoch == report.epochs:
            self._last_epoch_line = now
            self.message(f"epoch {report.epoch}/{report.epochs}  {status}  ({report.seconds:.2f} s/epoch)")

    def stop(self) -> None:
        if self._progress is not None:
            if self._steps_task is not None:  # the bar of the epochs stays, that of the last epoch's steps goes
                self._progress.remove_task(self._steps_task)
            self._progress.stop()
            self._progress = None
            self._steps_task = None
        self.phase_done("")
