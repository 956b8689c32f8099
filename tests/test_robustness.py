"""Robust on dirty data (issue 16): threads, and (below) outliers, heavy tails and divergence."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import typer.main
from typer.testing import CliRunner

from flowcli.cli import app
from flowcli.devices import default_threads, use_threads

runner = CliRunner()

# ------------------------------------------------------------------------------------------ threads


@pytest.fixture
def keep_threads() -> Iterator[None]:
    """Put torch's thread count back after a test that changes it (it is process-wide)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_threads_follow_omp_num_threads_else_the_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2,1")  # nested levels: the first is ours
    assert default_threads() == 2
    for unusable in ("", "0", "many"):
        monkeypatch.setenv("OMP_NUM_THREADS", unusable)
        assert default_threads() == len(os.sched_getaffinity(0))


def test_use_threads_sets_torch_and_refuses_zero(keep_threads: None) -> None:
    assert use_threads(1) == 1 and torch.get_num_threads() == 1
    from flowcli.errors import DataError

    with pytest.raises(DataError, match="--threads 0"):
        use_threads(0)


def test_every_command_that_runs_the_model_takes_threads() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name in ("fit", "sample", "logprob", "encode", "decode", "report"):
        assert "--threads" in {opt for p in commands[name].params for opt in p.opts}, name


def test_threads_option_applies(keep_threads: None, banana_files: dict, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    out = tmp_path / "s.csv"
    result = runner.invoke(app, ["sample", str(banana_files["ckpt"]), "-n", "5", "-o", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.stderr
    assert torch.get_num_threads() == 1
