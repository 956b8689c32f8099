"""Progress on stderr: within an epoch and in the phases before the first one, a plain line after
``STATUS_EVERY`` seconds without one when stderr is not a terminal; nothing with --quiet; nothing ever on
stdout."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import shop_table
from typer.testing import CliRunner

from flowcli import progress
from flowcli.cli import app
from flowcli.progress import Reporter, duration

runner = CliRunner()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain(clock: FakeClock, **options: float) -> tuple[Reporter, io.StringIO]:
    stream = io.StringIO()  # not a terminal: plain lines
    return Reporter(stream=stream, clock=clock, **options), stream


def test_a_plain_epoch_reports_its_steps_rows_per_second_and_time_left_after_eight_silent_seconds() -> None:
    clock = FakeClock()
    reporter, stream = plain(clock)
    reporter.start(200, "fit", steps=100, batch=500)
    assert stream.getvalue() == "training: up to 200 epochs of 100 steps of 500 rows\n"
    reporter.step(3, 0, 100, 0)
    for step in range(1, 32):  # 0.25 s per step: no line before STATUS_EVERY (8 s) without one
        clock.now += 0.25
        reporter.step(3, step, 100, 500 * step)
    assert stream.getvalue().count("\n") == 1
    clock.now += 0.25
    reporter.step(3, 32, 100, 16_000)  # 8 s since the last line
    assert stream.getvalue().splitlines()[-1] == "epoch 3/200  step 32/100  2,000 rows/s  0:17 left in the epoch"
    clock.now += 0.25
    reporter.step(3, 33, 100, 16_500)
    assert stream.getvalue().count("\n") == 2  # the next one after another eight seconds


def test_phases_say_what_runs_and_how_far_it_is_after_eight_silent_seconds() -> None:
    clock = FakeClock()
    reporter, stream = plain(clock)
    reporter.phase("fitting the conditional-questions network")
    clock.now += 4
    reporter.status("epoch 1, step 100")
    clock.now += 7
    reporter.status("epoch 2, step 200")
    reporter.phase_done("conditional-questions network: done")
    assert stream.getvalue().splitlines() == [
        "fitting the conditional-questions network ...",
        "  epoch 2, step 200  (0:11 so far)",
        "conditional-questions network: done",
    ]


def test_quiet_prints_nothing() -> None:
    clock = FakeClock()
    reporter, stream = plain(clock, status_every=0)
    reporter.quiet = True
    reporter.phase("x")
    reporter.status("y")
    reporter.start(2, "fit", 3, 4)
    reporter.step(1, 0, 3, 0)
    clock.now += 100
    reporter.step(1, 1, 3, 4)
    reporter.epoch(SimpleNamespace(epoch=1, epochs=2, train_nll=1.0, val_nll=1.0, best_val_nll=1.0, seconds=1.0))
    reporter.stop()
    assert stream.getvalue() == ""


def test_durations_read_as_a_clock() -> None:
    assert [duration(s) for s in (7, 125, 3723, float("inf"))] == ["0:07", "2:05", "1:02:03", "?"]


@pytest.fixture()
def every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A status line whenever one could be printed, so that a fit of seconds shows them all."""
    monkeypatch.setattr(progress, "STATUS_EVERY", 0.0)


def test_a_fit_reports_each_phase_and_its_steps_on_stderr_only(tmp_path: Path, every_step: None) -> None:
    shop_table(400).to_csv(tmp_path / "shop.csv", index=False)
    args = ["fit", str(tmp_path / "shop.csv"), "-o", str(tmp_path / "m.flow"), "--epochs", "2", "--seed", "0"]
    result = runner.invoke(app, [*args, "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    order = [
        first(r"^fitting 400 rows"),
        first(r"^fitting the discrete part \(\d+ features\) \.\.\.$"),
        first(r"^  discrete part: epoch 1, step 1, "),
        first(r"^discrete part: validation NLL [\d.]+ nats/row \(the training frequencies: [\d.]+\) after \d+ epochs"),
        first(r"^fitting the conditional-questions network \.\.\.$"),
        first(r"^  conditional-questions network: epoch 1, step 1, "),
        first(r"^conditional-questions network: validation NLL [\d.]+ \(standardized units\) after \d+ epochs"),
        first(r"^training: up to 2 epochs of \d+ steps of \d+ rows$"),
        first(r"^epoch 1/2  step 1/\d+  [\d,]+ rows/s  \d+:\d\d left in the epoch$"),
        first(r"^epoch 2/2  step 1/\d+  "),
        first(r"^scoring the held-out rows for the anomaly quantiles \.\.\.$"),
        first(r"^  scoring validation rows: 0 of [\d,]+  "),  # lines inside the final scoring too
        first(r"^  sampling rows for the rare patterns of absent cells: 2,048 of 20,000  "),
        first(r"^  scoring sampled rows: 18,432 of 20,000  "),
        first(r"^best validation NLL"),
    ]
    assert order == sorted(order), result.stderr


def test_a_quiet_fit_prints_nothing(tmp_path: Path, every_step: None) -> None:
    shop_table(200).to_csv(tmp_path / "shop.csv", index=False)
    args = ["fit", str(tmp_path / "shop.csv"), "-o", str(tmp_path / "m.flow"), "--epochs", "1", "-q"]
    result = runner.invoke(app, [*args, "--device", "cpu", "--threads", "1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_bar_advances_within_the_epoch_with_rows_per_second() -> None:
    clock, stream = FakeClock(), Terminal()
    reporter = Reporter(stream=stream, clock=clock)
    reporter.phase("fitting the discrete part")
    reporter.status("discrete part: epoch 1, step 5")
    reporter.phase_done("discrete part: done")
    reporter.start(10, "fit", steps=20, batch=100)
    reporter.step(1, 0, 20, 0)
    clock.now += 2
    reporter.step(1, 10, 20, 1000)
    reporter._progress.refresh()  # rich redraws from a thread of its own: draw now
    reporter.stop()
    shown = stream.getvalue()
    assert "discrete part: done" in shown and "training: up to 10 epochs" in shown
    assert "epoch 1" in shown and "10/20" in shown and "500 rows/s" in shown


def test_work_without_progress_of_its_own_is_announced_once_it_takes_long() -> None:
    stream = io.StringIO()
    with Reporter(stream=stream, status_every=60).slow("reading big.csv"):
        pass  # done long before a minute: no line
    assert stream.getvalue() == ""
    with Reporter(stream=stream, status_every=0).slow("reading big.csv"):
        for _ in range(500):  # until the timer thread has printed (it starts at once)
            if stream.getvalue():
                break
            threading.Event().wait(0.01)
    assert stream.getvalue() == "reading big.csv ...\n"
