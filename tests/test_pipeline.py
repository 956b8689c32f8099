"""Reading ahead and writing behind (flowcli/pipeline.py): order, errors where a plain loop raises them,
bounded queues, threads that end."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from flowcli.pipeline import read_ahead, write_behind


def _live_pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("flowcli-")]


def _wait_for_no_pipeline_threads() -> None:
    deadline = time.monotonic() + 5
    while _live_pipeline_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _live_pipeline_threads() == []


def test_read_ahead_yields_every_item_in_order() -> None:
    assert list(read_ahead(iter(range(1000)), depth=2)) == list(range(1000))
    assert list(read_ahead([])) == []
    _wait_for_no_pipeline_threads()


def test_read_ahead_raises_the_readers_error_after_the_items_before_it() -> None:
    def chunks() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("row 3: not a number")

    seen = []
    with pytest.raises(ValueError, match="row 3"):
        for item in read_ahead(chunks()):
            seen.append(item)
    assert seen == [1, 2]
    _wait_for_no_pipeline_threads()


def test_read_ahead_stays_at_most_depth_items_ahead_and_closes_the_source_when_stopped_early() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def chunks() -> Iterator[int]:
        try:
            for i in range(100):
                produced.append(i)
                yield i
        finally:
            closed.set()

    stream = read_ahead(chunks(), depth=2)
    assert next(stream) == 0
    time.sleep(0.3)  # time for the reader to run ahead as far as it may
    # One handed out, two waiting in the queue, one read and waiting for a slot.
    assert len(produced) <= 4
    stream.close()  # the consumer stops early (an error downstream, Ctrl-C)
    assert closed.wait(5), "the source was not closed"
    assert len(produced) <= 5
    _wait_for_no_pipeline_threads()


def test_write_behind_writes_everything_in_order_before_the_block_ends() -> None:
    written: list[int] = []

    def slow_write(item: int) -> None:
        time.sleep(0.001)
        written.append(item)

    with write_behind(slow_write) as write:
        for i in range(200):
            write(i)
    assert written == list(range(200))
    _wait_for_no_pipeline_threads()


def test_write_behind_raises_the_writers_error_and_stops_writing() -> None:
    written: list[int] = []

    def write_until_full(item: int) -> None:
        if item == 3:
            raise OSError(28, "No space left on device")
        written.append(item)

    with pytest.raises(OSError, match="No space left"):
        with write_behind(write_until_full) as write:
            for i in range(1000):
                write(i)
    assert written == [0, 1, 2]  # nothing after the failed write
    _wait_for_no_pipeline_threads()


def test_write_behind_raises_an_error_of_the_last_write_when_the_block_ends() -> None:
    def fail(item: int) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        with write_behind(fail) as write:
            write(0)  # accepted: the failure comes later, from the thread
    _wait_for_no_pipeline_threads()


def test_write_behind_drops_what_waits_when_the_block_fails() -> None:
    started, release = threading.Event(), threading.Event()
    written: list[int] = []

    def blocking_write(item: int) -> None:
        started.set()
        release.wait(5)
        written.append(item)

    with pytest.raises(KeyError):
        with write_behind(blocking_write, depth=2) as write:
            write(0)
            assert started.wait(5)
            write(1)
            write(2)
            threading.Timer(0.3, release.set).start()  # the write in progress ends after the block has failed
            raise KeyError("the scoring failed")
    # The write in progress finishes; the two waiting are dropped, so the caller can discard the output.
    assert written == [0]
    _wait_for_no_pipeline_threads()
