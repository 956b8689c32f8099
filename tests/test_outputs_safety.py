"""Nothing the user has is lost: outputs that would overwrite an input are refused, a directory run is
all or nothing with errors that name the file, and the metrics file of a fit is watchable without
ever replacing an earlier one before the new checkpoint is saved."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import SMALL_CONFIG, assert_clean_error
from typer.testing import CliRunner

import flowcli
from flowcli import checkpoint
from flowcli.cli import app
from flowcli.errors import DataError
from flowcli.train import Interrupted

runner = CliRunner()


def listing(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture()
def victim(tmp_path: Path, banana_files: dict) -> Path:
    path = tmp_path / "victim.csv"
    shutil.copy(banana_files["csv"], path)
    (tmp_path / "link.csv").symlink_to(path.name)
    (tmp_path / "sub").mkdir()
    return path


# --- fit: the output is never the input nor a table ------------------------------------------------------


@pytest.mark.parametrize(
    "option, output, message",
    [
        ("-o", "victim.csv", "-o victim.csv: is the input file victim.csv"),
        ("-o", "link.csv", "-o link.csv: is the input file victim.csv"),
        ("-o", "sub/../victim.csv", "-o sub/../victim.csv: is the input file"),
        ("-o", "fresh.csv", "-o fresh.csv: is named as a table (.csv), but fit writes a checkpoint there"),
        ("-o", "model.parquet", "is named as a table (.parquet)"),
        ("-o", "cfg.yaml", "-o cfg.yaml: is the input file cfg.yaml"),
        ("--metrics", "victim.csv", "--metrics victim.csv: is the input file victim.csv"),
        ("--metrics", "m.csv", "--metrics m.csv: is named as a table (.csv), but fit writes metrics there"),
    ],
)
def test_fit_refuses_to_overwrite_its_input_or_a_table(
    victim: Path, option: str, output: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = victim.parent
    (tmp / "cfg.yaml").write_text("layers: [maf]\n")
    monkeypatch.chdir(tmp)
    before = listing(tmp)
    args = ["fit", "victim.csv", "-c", "cfg.yaml", *(["-o", "m.flow"] if option == "--metrics" else []), option, output]
    assert_clean_error(runner.invoke(app, args), message)
    assert listing(tmp) == before


def test_the_library_refuses_it_too(victim: Path) -> None:
    with pytest.raises(DataError, match="is the input file"):
        flowcli.fit(str(victim), SMALL_CONFIG, output=victim.parent / "link.csv")
    with pytest.raises(DataError, match="named as a table"):
        flowcli.fit(pd.read_csv(victim), SMALL_CONFIG, output=victim.parent / "out.csv")
    assert not (victim.parent / "out.csv").exists()


# --- logprob, encode, decode, sample: -o is never an input ------------------------------------------------


@pytest.mark.parametrize("command", ["logprob", "encode", "decode"])
@pytest.mark.parametrize("output", ["victim.csv", "link.csv"])
def test_streaming_commands_refuse_their_input_as_output(
    victim: Path, banana_files: dict, command: str, output: str
) -> None:
    before = listing(victim.parent)
    result = runner.invoke(app, [command, str(banana_files["ckpt"]), str(victim), "-o", str(victim.parent / output)])
    assert_clean_error(result, f"{output}: is the input file", "so the input is not overwritten")
    assert listing(victim.parent) == before


def test_sample_refuses_its_checkpoint_as_output(tmp_path: Path, banana_files: dict) -> None:
    ckpt = tmp_path / "odd.csv"  # a checkpoint with a table's name: -o odd.csv would replace it
    shutil.copy(banana_files["ckpt"], ckpt)
    assert_clean_error(runner.invoke(app, ["sample", str(ckpt), "-n", "5", "-o", str(ckpt)]), "is the input file")
    assert ckpt.read_bytes() == banana_files["ckpt"].read_bytes()


# --- directory mode: all or nothing, errors name the file ----------------------------------------------------


@pytest.fixture()
def parts(tmp_path: Path, banana_frame: pd.DataFrame) -> Path:
    source = tmp_path / "parts"
    source.mkdir()
    for i in range(3):
        banana_frame.iloc[100 * i : 100 * (i + 1)].to_csv(source / f"part-{i}.csv", index=False)
    return source


def test_a_failing_file_names_itself_and_leaves_outdir_as_it_was(
    tmp_path: Path, parts: Path, banana_files: dict
) -> None:
    bad = parts / "part-1.csv"
    lines = bad.read_text().splitlines()
    lines[5] = "abc," + lines[5].split(",")[1]
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-0.csv").write_text("an earlier run's output\n")  # would be replaced by this run
    before = listing(out)
    for command in ("logprob", "encode"):
        result = runner.invoke(app, [command, str(banana_files["ckpt"]), str(parts), "-o", str(out)])
        assert_clean_error(result, f"{bad}: ", "row 5", "'abc'")
        assert listing(out) == before  # part-0 was done, but not moved into place; no hidden leftovers


def test_a_failing_directory_run_removes_the_outdir_it_made(tmp_path: Path, parts: Path, banana_files: dict) -> None:
    bad = parts / "part-2.csv"
    bad.write_text(bad.read_text().replace("\n", "\nabc,1\n", 1))
    result = runner.invoke(app, ["logprob", str(banana_files["ckpt"]), str(parts), "-o", str(tmp_path / "new_out")])
    assert_clean_error(result, "part-2.csv")
    assert not (tmp_path / "new_out").exists()  # all or nothing: no empty OUTDIR left behind


def test_a_directory_input_with_a_file_name_as_output_is_refused(
    tmp_path: Path, parts: Path, banana_files: dict
) -> None:
    """-o scores.csv for a directory input is a slip: it made a directory named scores.csv."""
    result = runner.invoke(app, ["logprob", str(banana_files["ckpt"]), str(parts), "-o", str(tmp_path / "scores.csv")])
    assert_clean_error(result, "scores.csv: names a file, but the input is a directory: give -o OUTDIR")
    assert not (tmp_path / "scores.csv").exists()


def test_a_directory_run_that_succeeds_writes_every_file(tmp_path: Path, parts: Path, banana_files: dict) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["logprob", str(banana_files["ckpt"]), str(parts), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(out)) == ["part-0.csv", "part-1.csv", "part-2.csv"]
    assert len(pd.read_csv(out / "part-2.csv")) == 100


def test_a_directory_of_latents_names_the_file_of_a_bad_one(tmp_path: Path, parts: Path, banana_files: dict) -> None:
    latent = tmp_path / "latent"
    assert runner.invoke(app, ["encode", str(banana_files["ckpt"]), str(parts), "-o", str(latent)]).exit_code == 0
    (latent / "part-2.csv").write_text("z0\n0.5\n")
    out = tmp_path / "rows"
    result = runner.invoke(app, ["decode", str(banana_files["ckpt"]), str(latent), "-o", str(out)])
    assert_clean_error(result, f"{latent / 'part-2.csv'}: ", "missing column 'z1'")
    assert not out.exists()  # the OUTDIR this run made is gone with its work (all or nothing)


# --- the metrics file: watchable at its path, an earlier one replaced only with the new checkpoint ----------


FAST = {**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 3}}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_metrics_are_written_per_epoch_at_their_path(tmp_path: Path, banana_frame: pd.DataFrame) -> None:
    metrics = tmp_path / "m.metrics.jsonl"
    seen = []

    def watch(report) -> None:  # what `tail -f m.metrics.jsonl` sees at the end of each epoch
        seen.append(len(lines(metrics)))

    flowcli.fit(banana_frame, FAST, seed=0, output=tmp_path / "m.flow", on_epoch=watch)
    assert seen == [1, 2, 3] and len(lines(metrics)) == 3
    assert sorted(os.listdir(tmp_path)) == ["m.flow", "m.metrics.jsonl"]


def test_an_earlier_metrics_file_is_replaced_only_when_the_checkpoint_is_saved(
    tmp_path: Path, banana_frame: pd.DataFrame
) -> None:
    metrics = tmp_path / "m.metrics.jsonl"
    metrics.write_text("earlier run\n")
    during = []

    def watch(report) -> None:
        (temporary,) = tmp_path.glob(".m.metrics.jsonl.*.tmp")
        during.append((metrics.read_text(), len(lines(temporary))))

    flowcli.fit(banana_frame, FAST, seed=0, output=tmp_path / "m.flow", on_epoch=watch)
    assert during == [("earlier run\n", 1), ("earlier run\n", 2), ("earlier run\n", 3)]
    assert len(lines(metrics)) == 3 and sorted(os.listdir(tmp_path)) == ["m.flow", "m.metrics.jsonl"]


@pytest.mark.parametrize("earlier", [True, False])
def test_a_failed_fit_leaves_the_metrics_as_they_were(
    tmp_path: Path, banana_frame: pd.DataFrame, earlier: bool
) -> None:
    metrics = tmp_path / "m.metrics.jsonl"
    if earlier:
        metrics.write_text("earlier run\n")
    before = listing(tmp_path)

    def fail(report) -> None:
        if report.epoch == 2:
            raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        flowcli.fit(banana_frame, FAST, seed=0, output=tmp_path / "m.flow", on_epoch=fail)
    assert listing(tmp_path) == before  # the earlier file untouched, or no file at all


# --- reproducible checkpoints ---------------------------------------------------------------------------------


def fit_cli(data: Path, out: Path, *extra: str) -> None:
    args = ["fit", str(data), "-c", "cfg.yaml", "-o", str(out), "--seed", "3", "--device", "cpu", "-q", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr


@pytest.fixture()
def fit_dir(victim: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import yaml

    (victim.parent / "cfg.yaml").write_text(yaml.safe_dump(FAST))
    monkeypatch.chdir(victim.parent)
    return victim.parent


def test_identical_seeded_fits_write_identical_bytes_and_inspect_shows_the_time(fit_dir: Path) -> None:
    fit_cli(fit_dir / "victim.csv", fit_dir / "a.flow")
    fit_cli(fit_dir / "victim.csv", fit_dir / "b.flow")
    assert (fit_dir / "a.flow").read_bytes() == (fit_dir / "b.flow").read_bytes()
    header, _ = checkpoint.load(fit_dir / "a.flow")
    assert "seconds" not in json.dumps(header)  # fit_seconds, each epoch's and the training state's
    epochs = [json.loads(line) for line in lines(fit_dir / "a.metrics.jsonl")]
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and all(e["seconds"] > 0 for e in epochs)
    shown = json.loads(runner.invoke(app, ["inspect", "a.flow", "--json"]).stdout)
    assert shown["training"]["fit_seconds"] == pytest.approx(sum(e["seconds"] for e in epochs), abs=1e-3)
    (fit_dir / "a.metrics.jsonl").unlink()  # no metrics file: the time is unknown, the rest is shown
    assert json.loads(runner.invoke(app, ["inspect", "a.flow", "--json"]).stdout)["training"]["fit_seconds"] is None


def test_a_resumed_run_keeps_its_times_and_ends_in_the_same_bytes(fit_dir: Path) -> None:
    fit_cli(fit_dir / "victim.csv", fit_dir / "straight.flow")

    def stop_after_2(report) -> None:  # Ctrl-C at the end of epoch 2
        if report.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        flowcli.fit("victim.csv", "cfg.yaml", seed=3, device="cpu", output="r.flow", on_epoch=stop_after_2)
    first = [json.loads(line)["seconds"] for line in lines(fit_dir / "r.metrics.jsonl")]
    result = runner.invoke(app, ["fit", "victim.csv", "-o", "r.flow", "--resume", "r.flow", "--epochs", "3", "-q"])
    assert result.exit_code == 0, result.stderr
    epochs = [json.loads(line) for line in lines(fit_dir / "r.metrics.jsonl")]
    assert [e["seconds"] for e in epochs[:2]] == first and len(epochs) == 3
    shown = json.loads(runner.invoke(app, ["inspect", "r.flow", "--json"]).stdout)
    assert shown["training"]["fit_seconds"] == pytest.approx(sum(e["seconds"] for e in epochs), abs=1e-3)
    assert (fit_dir / "r.flow").read_bytes() == (fit_dir / "straight.flow").read_bytes()


def test_checkpoints_that_hold_times_still_load_resume_and_show_them(fit_dir: Path) -> None:
    """Files written before checkpoints were made reproducible carry fit_seconds and epoch times."""
    fit_cli(fit_dir / "victim.csv", fit_dir / "old.flow", "--epochs", "2")
    header, tensors = checkpoint.load(fit_dir / "old.flow")
    header["info"]["fit_seconds"] = 12.5
    for epoch in header["info"]["metrics"] + header["train_state"]["history"]:
        epoch["seconds"] = 6.25
    header["train_state"]["seconds"] = 12.5
    checkpoint.save(fit_dir / "old.flow", {k: v for k, v in header.items() if not k.startswith("format")}, tensors)
    (fit_dir / "old.metrics.jsonl").unlink()
    shown = json.loads(runner.invoke(app, ["inspect", "old.flow", "--json"]).stdout)
    assert shown["training"]["fit_seconds"] == 12.5
    result = runner.invoke(app, ["fit", "victim.csv", "-o", "new.flow", "--resume", "old.flow", "--epochs", "3", "-q"])
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["seconds"] for line in lines(fit_dir / "new.metrics.jsonl")][:2] == [6.25, 6.25]


# --- special files and links ----------------------------------------------------------------------------------


def read_fifo_in_background(path: Path) -> tuple[Any, list[bytes]]:
    import threading

    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(path.read_bytes()), daemon=True)
    reader.start()
    return reader, got


def test_a_fifo_is_written_into_not_replaced(tmp_path: Path, banana_files: dict, banana_frame: pd.DataFrame) -> None:
    """A staged file moved onto a fifo (or /dev/stdout) would replace it with a regular file and leave its
    reader with nothing: outputs and metrics go into it instead."""
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    reader, got = read_fifo_in_background(fifo)
    result = runner.invoke(app, ["sample", str(banana_files["ckpt"]), "-n", "5", "-o", str(fifo)])
    assert result.exit_code == 0, result.stderr
    reader.join(10)
    assert len(got[0].decode().splitlines()) == 6 and fifo.is_fifo()
    metrics = tmp_path / "m.fifo"
    os.mkfifo(metrics)
    reader, got = read_fifo_in_background(metrics)
    flowcli.fit(banana_frame, FAST, seed=0, output=tmp_path / "m.flow", metrics=metrics)
    reader.join(10)
    assert [json.loads(line)["epoch"] for line in got[0].decode().splitlines()] == [1, 2, 3] and metrics.is_fifo()


def test_a_symlinked_output_stays_a_link_to_the_new_content(tmp_path: Path, banana_files: dict) -> None:
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    (tmp_path / "link.csv").symlink_to("real.csv")
    result = runner.invoke(app, ["sample", str(banana_files["ckpt"]), "-n", "4", "-o", str(tmp_path / "link.csv")])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "link.csv").is_symlink() and len(lines(target)) == 5
    assert sorted(os.listdir(tmp_path)) == ["link.csv", "real.csv"]


def test_metrics_may_not_overwrite_the_checkpoint_being_resumed(fit_dir: Path) -> None:
    fit_cli(fit_dir / "victim.csv", fit_dir / "r.flow", "--epochs", "2")
    before = (fit_dir / "r.flow").read_bytes()
    result = runner.invoke(
        app, ["fit", "victim.csv", "-o", "out.flow", "--resume", "r.flow", "--metrics", "r.flow", "--epochs", "3"]
    )
    assert_clean_error(result, "--metrics r.flow", "is the input file")
    assert (fit_dir / "r.flow").read_bytes() == before and not (fit_dir / "out.flow").exists()


def test_metrics_into_dev_null_and_appended_stdout_keep_the_checkpoint(tmp_path: Path, banana_files: dict) -> None:
    """/dev/null reports itself seekable but cannot be truncated (the fit lost its checkpoint after training);
    /dev/stdout redirected with >> is written into, keeping what the file held (it was replaced)."""
    import subprocess
    import sys

    import yaml

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(FAST))
    base = [sys.executable, "-m", "flowcli", "fit", str(banana_files["csv"]), "-c", "cfg.yaml", "-q", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    null = subprocess.run([*base, "-o", "a.flow", "--metrics", "/dev/null"], cwd=tmp_path, env=env, capture_output=True)
    assert null.returncode == 0 and (tmp_path / "a.flow").exists(), null.stderr
    log = tmp_path / "log.txt"
    log.write_text("earlier\n")
    with open(log, "a") as out:
        run = subprocess.run([*base, "-o", "b.flow", "--metrics", "/dev/stdout"], cwd=tmp_path, env=env, stdout=out)
    assert run.returncode == 0 and (tmp_path / "b.flow").exists()
    assert lines(log)[0] == "earlier" and [json.loads(line)["epoch"] for line in lines(log)[1:]] == [1, 2, 3]


def test_resuming_with_metrics_into_a_fifo_does_not_wait_to_read_it(tmp_path: Path, banana_frame: pd.DataFrame) -> None:
    with pytest.raises(Interrupted):
        flowcli.fit(banana_frame, FAST, seed=0, output=tmp_path / "r.flow", on_epoch=stop_at_2)
    fifo = tmp_path / "m.fifo"
    os.mkfifo(fifo)
    reader, got = read_fifo_in_background(fifo)
    model = flowcli.fit(
        banana_frame, None, output=tmp_path / "r.flow", resume=tmp_path / "r.flow", metrics=fifo, epochs=3
    )
    reader.join(10)
    assert model.info["epochs_run"] == 3 and len(got[0].decode().splitlines()) == 3


def stop_at_2(report) -> None:
    if report.epoch == 2:
        raise KeyboardInterrupt
