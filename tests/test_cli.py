"""Every subcommand through the CLI runner, a real shell pipeline, and bad input handled cleanly."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import SMALL_CONFIG, assert_clean_error
from typer.testing import CliRunner

from flowcli.cli import app
from flowcli.model import load_model

runner = CliRunner()


def run(*args: str, input: bytes | str | None = None):
    return runner.invoke(app, list(args), input=input)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "small.yaml"
    path.write_text(yaml.safe_dump({**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 3}}))
    return path


def test_fit_writes_checkpoint_and_metrics(tmp_path: Path, banana_files: dict, config_file: Path) -> None:
    out = tmp_path / "m.flow"
    result = run(
        "fit",
        str(banana_files["csv"]),
        "-c",
        str(config_file),
        "-o",
        str(out),
        "--epochs",
        "4",
        "--seed",
        "1",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # stdout carries data only; fit has none
    assert "best validation NLL" in result.stderr
    lines = [json.loads(line) for line in (tmp_path / "m.metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3, 4]
    assert {"epoch", "train_nll", "val_nll", "seconds"} <= set(lines[0])
    assert out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_fit_from_stdin_quiet_with_explicit_metrics(tmp_path: Path, banana_files: dict, config_file: Path) -> None:
    metrics = tmp_path / "log.jsonl"
    result = run(
        "fit",
        "-",
        "-c",
        str(config_file),
        "-o",
        str(tmp_path / "m.flow"),
        "--metrics",
        str(metrics),
        "--quiet",
        input=banana_files["csv"].read_bytes(),
    )
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""
    assert len(metrics.read_text().splitlines()) == 3


def test_sample_to_stdout_csv_and_parquet(tmp_path: Path, banana_files: dict) -> None:
    ckpt = str(banana_files["ckpt"])
    result = run("sample", ckpt, "-n", "7", "--seed", "2")
    assert result.exit_code == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert list(frame.columns) == ["height_cm", "weight_kg"] and len(frame) == 7
    assert result.stdout == run("sample", ckpt, "-n", "7", "--seed", "2").stdout  # seeded: identical
    out = tmp_path / "s.parquet"
    assert run("sample", ckpt, "-n", "5", "-o", str(out), "--chunk-size", "2").exit_code == 0
    assert len(pd.read_parquet(out)) == 5


def test_logprob_appends_a_column_and_matches_the_library(banana_files: dict, banana_model) -> None:
    data = banana_files["csv"].read_bytes()
    result = run("logprob", str(banana_files["ckpt"]), "-", "--chunk-size", "100", input=data)
    assert result.exit_code == 0, result.stderr
    scored = pd.read_csv(io.StringIO(result.stdout))
    frame = pd.read_csv(banana_files["csv"])
    assert list(scored.columns) == ["height_cm", "weight_kg", "logprob"] and len(scored) == len(frame)
    # logprob scores in float32 by default: the library model loaded in float32 gives the same numbers.
    in_float32 = load_model(str(banana_files["ckpt"]), dtype=torch.float32)
    np.testing.assert_allclose(scored["logprob"], in_float32.log_prob(frame), rtol=1e-6)


def test_logprob_in_float32_is_close_to_float64(banana_files: dict, banana_model) -> None:
    expected = banana_model.log_prob(pd.read_csv(banana_files["csv"]))  # the library's default: float64
    result = run("logprob", str(banana_files["ckpt"]), str(banana_files["csv"]), "--precision", "float64")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_allclose(pd.read_csv(io.StringIO(result.stdout))["logprob"], expected, rtol=1e-12)
    result = run("logprob", str(banana_files["ckpt"]), str(banana_files["csv"]))
    assert result.exit_code == 0, result.stderr
    scored = pd.read_csv(io.StringIO(result.stdout))
    np.testing.assert_allclose(scored["logprob"], expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(scored["logprob"], expected, rtol=1e-12, atol=0), "float32 should differ in the last digits"
    bad = run("logprob", str(banana_files["ckpt"]), str(banana_files["csv"]), "--precision", "float16")
    assert bad.exit_code == 2 and "--precision" in bad.stderr


def test_encode_then_decode_round_trips(tmp_path: Path, banana_files: dict) -> None:
    ckpt = str(banana_files["ckpt"])
    latent = tmp_path / "z.parquet"
    assert run("encode", ckpt, str(banana_files["csv"]), "-o", str(latent)).exit_code == 0
    assert list(pd.read_parquet(latent).columns) == ["z0", "z1"]
    result = run("decode", ckpt, str(latent))
    assert result.exit_code == 0, result.stderr
    back = pd.read_csv(io.StringIO(result.stdout))
    np.testing.assert_allclose(back.to_numpy(), pd.read_csv(banana_files["csv"]).to_numpy(), atol=1e-6)


def test_every_command_help_has_an_example() -> None:
    for command in ["fit", "sample", "logprob", "impute", "encode", "decode", "report", "inspect"]:
        result = run(command, "--help")
        assert result.exit_code == 0 and "Example:" in result.stdout, command


def test_real_shell_pipeline(banana_files: dict) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = (
        f"cat {banana_files['csv']} | {sys.executable} -m flowcli logprob {banana_files['ckpt']} - | tail -n +2 | wc -l"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, check=False, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(pd.read_csv(banana_files["csv"]))


# --- bad input: one line "Error: ...", exit 1, no traceback, nothing written -----------------------------


def bad_fit(tmp_path: Path, content: str | bytes, *extra: str, name: str = "bad.csv"):
    data = tmp_path / name
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "out.flow"
    result = run("fit", str(data), "-o", str(out), "--epochs", "1", *extra)
    assert not out.exists() and not (tmp_path / "out.metrics.jsonl").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    return result


def test_fit_empty_file(tmp_path: Path) -> None:
    assert_clean_error(bad_fit(tmp_path, ""), "empty")


def test_sample_of_zero_rows_is_the_header(tmp_path: Path, banana_files: dict) -> None:
    """A count computed upstream may be 0: the header and no row, exit 0, as for an empty input; the
    conditions are still checked."""
    ckpt = str(banana_files["ckpt"])
    columns = list(pd.read_csv(banana_files["csv"], nrows=1).columns)
    result = run("sample", ckpt, "-n", "0")
    assert result.exit_code == 0 and result.stdout.splitlines() == [",".join(columns)]
    assert run("sample", ckpt, "-n", "0", "-o", str(tmp_path / "z.parquet")).exit_code == 0
    assert list(pd.read_parquet(tmp_path / "z.parquet").columns) == columns
    assert_clean_error(run("sample", ckpt, "-n", "0", "--given", "nope=1"), "'nope' is not a column")


def test_fit_header_only(tmp_path: Path) -> None:
    assert_clean_error(bad_fit(tmp_path, "a,b\n"), "no data rows")


@pytest.mark.parametrize("form", ["csv", "stdin", "parquet"])
def test_rows_to_rows_commands_map_a_header_only_table_to_their_header(
    tmp_path: Path, banana_files: dict, form: str
) -> None:
    """A filter upstream that kept no row (``awk 'NR == 1 || ...'``) is an empty table, not an error, for the
    commands that map rows to rows: exit 0, their output's header, no row. ``fit`` still needs rows."""
    ckpt = str(banana_files["ckpt"])
    columns = list(pd.read_csv(banana_files["csv"], nrows=1).columns)
    csv = tmp_path / "header.csv"
    csv.write_text(",".join(columns) + "\n")
    latent = tmp_path / "latent.csv"
    latent.write_text("z0,z1\n")
    if form == "parquet":
        pd.read_csv(banana_files["csv"]).iloc[:0].to_parquet(tmp_path / "header.parquet")
    expected = {
        "logprob": [*columns, "logprob", "anomaly", "percentile"],
        "encode": ["z0", "z1"],
        "impute": columns,
        "decode": columns,
    }
    for command, header in expected.items():
        source = latent if command == "decode" else tmp_path / f"header.{'parquet' if form == 'parquet' else 'csv'}"
        options = ["--flag-below", "0.01", "--percentile"] if command == "logprob" else []
        if form == "stdin":
            result = runner.invoke(app, [command, ckpt, "-", *options], input=source.read_bytes())
        else:
            result = run(command, ckpt, str(source), *options)
        assert result.exit_code == 0, (command, result.stderr)
        assert result.stdout.splitlines() == [",".join(header)], (command, result.stdout)
        out = tmp_path / f"{command}.parquet"
        assert run(command, ckpt, str(source), *options, "-o", str(out)).exit_code == 0
        assert list(pd.read_parquet(out).columns) == header and len(pd.read_parquet(out)) == 0
    given = run("sample", ckpt, "--given-file", str(csv), "-n", "3")
    assert given.exit_code == 0 and given.stdout.splitlines() == [",".join(columns)], given.stderr
    assert_clean_error(run("fit", str(csv), "-o", str(tmp_path / "m.flow")), "no data rows")


def test_the_resume_hint_is_given_only_where_resume_would_take_the_checkpoint(
    tmp_path: Path, banana_files: dict
) -> None:
    from flowcli.cli import _resume_hint

    ckpt = str(banana_files["ckpt"])  # a finished run: nothing to resume without a larger --epochs
    assert _resume_hint(ckpt, False, str(banana_files["csv"]), None) == ""
    assert _resume_hint(str(tmp_path / "none.flow"), False, str(banana_files["csv"]), None) == ""
    stopped = tmp_path / "stopped.flow"
    from flowcli.fitting import fit
    from flowcli.train import Interrupted

    def stop(report) -> None:  # Ctrl-C at the end of the first epoch: its best model is saved
        raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        fit(str(banana_files["csv"]), {**SMALL_CONFIG}, seed=0, device="cpu", output=stopped, on_epoch=stop)
    assert _resume_hint(str(stopped), False, str(banana_files["csv"]), None) == f"; continue with --resume {stopped}"
    assert _resume_hint(str(stopped), True, str(banana_files["csv"]), None) == ""  # streamed
    assert _resume_hint(str(stopped), False, str(banana_files["csv"]), 2) == ""  # --nproc 2
    assert _resume_hint(str(stopped), False, str(tmp_path), None) == ""  # a directory: streamed


def test_fit_text_in_numeric_column_names_column_value_and_row(tmp_path: Path) -> None:
    assert_clean_error(bad_fit(tmp_path, "a,b\n1,2\n3,oops\n5,6\n"), "'b'", "'oops'", "row 2")


def test_fit_unknown_layer_type_names_the_allowed_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("layers:\n  - type: mafx\n")
    assert_clean_error(bad_fit(tmp_path, "a,b\n1,2\n3,4\n", "-c", str(cfg)), "layers[0].type", "mafx", "maf")


def test_fit_unknown_option_and_bad_value(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("layers:\n  - type: maf\n    hiden: [3]\n")
    assert_clean_error(bad_fit(tmp_path, "a,b\n1,2\n3,4\n", "-c", str(cfg)), "layers[0].hiden", "hidden")
    cfg.write_text("layers:\n  - type: maf\ntraining:\n  lr: -1\n")
    assert_clean_error(bad_fit(tmp_path, "a,b\n1,2\n3,4\n", "-c", str(cfg)), "training.lr")
    cfg.write_text("layers:\n  - type: permute\n    order: sideways\n")
    assert_clean_error(bad_fit(tmp_path, "a,b\n1,2\n3,4\n", "-c", str(cfg)), "layers[0].order", "'reverse'")


def test_fit_malformed_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("layers: [\n  - type: maf\n")
    assert_clean_error(bad_fit(tmp_path, "a,b\n1,2\n3,4\n", "-c", str(cfg)), "malformed YAML", "line")


def test_fit_binary_garbage_and_wrong_extension(tmp_path: Path) -> None:
    assert_clean_error(bad_fit(tmp_path, bytes(range(256)) * 4), "not a text CSV")
    assert_clean_error(bad_fit(tmp_path, "a,b\n1,2\n", name="data.txt"), "unknown table format")
    assert_clean_error(bad_fit(tmp_path, b"PAR1garbage", name="data.parquet"), "not a readable Parquet")


def test_fit_into_missing_directory(tmp_path: Path, banana_files: dict) -> None:
    result = run("fit", str(banana_files["csv"]), "-o", str(tmp_path / "nope" / "m.flow"))
    assert_clean_error(result, "does not exist")


def test_logprob_of_a_file_lacking_a_column_scores_the_columns_present(banana_files: dict, banana_model) -> None:
    result = run("logprob", str(banana_files["ckpt"]), "-", input="height_cm,other\n170,2\n")
    assert result.exit_code == 0, result.stderr
    scored = pd.read_csv(io.StringIO(result.stdout))
    assert list(scored.columns) == ["height_cm", "other", "logprob"]  # weight_kg marginalised out
    assert np.isfinite(scored["logprob"]).all()


def test_encode_missing_column(tmp_path: Path, banana_files: dict) -> None:
    out = tmp_path / "latent.csv"
    result = run("encode", str(banana_files["ckpt"]), "-", "-o", str(out), input="height_cm,other\n1,2\n")
    assert_clean_error(result, "missing column 'weight_kg'")
    assert not out.exists()


def test_logprob_of_a_file_with_none_of_the_columns(tmp_path: Path, banana_files: dict) -> None:
    out = tmp_path / "scored.csv"
    result = run("logprob", str(banana_files["ckpt"]), "-", "-o", str(out), input="other,w\n1,2\n")
    assert_clean_error(result, "none of the model's columns")
    assert not out.exists()


def test_logprob_bad_value_in_a_later_chunk_leaves_no_output_and_keeps_old_file(
    tmp_path: Path, banana_files: dict
) -> None:
    out = tmp_path / "scored.csv"
    out.write_text("precious\n")
    rows = "height_cm,weight_kg\n" + "170,60\n" * 50 + "170,abc\n"
    result = run("logprob", str(banana_files["ckpt"]), "-", "-o", str(out), "--chunk-size", "10", input=rows)
    assert_clean_error(result, "'weight_kg'", "row 51", "'abc'")
    assert out.read_text() == "precious\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint at all", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_missing_or_corrupt_checkpoint(tmp_path: Path, content: bytes | None) -> None:
    ckpt = tmp_path / "m.flow"
    if content is not None:
        ckpt.write_bytes(content)
    for args in (
        ["sample", str(ckpt), "-n", "3"],
        ["logprob", str(ckpt), "-"],
        ["encode", str(ckpt), "-"],
        ["decode", str(ckpt), "-"],
    ):
        result = run(*args, input="a\n1\n")
        assert_clean_error(result, str(ckpt))
        assert result.stdout == ""


def test_truncated_checkpoint(tmp_path: Path, banana_files: dict) -> None:
    data = banana_files["ckpt"].read_bytes()
    for cut in (len(data) // 2, len(data) - 1):
        ckpt = tmp_path / "t.flow"
        ckpt.write_bytes(data[:cut])
        assert_clean_error(run("sample", str(ckpt), "-n", "2"), "t.flow")


def test_flipped_byte_in_weights_is_detected(tmp_path: Path, banana_files: dict) -> None:
    data = bytearray(banana_files["ckpt"].read_bytes())
    data[-10] ^= 0xFF
    ckpt = tmp_path / "f.flow"
    ckpt.write_bytes(bytes(data))
    assert_clean_error(run("sample", str(ckpt), "-n", "2"), "checksum")


def test_fit_cuda_without_gpu_is_a_clear_error(tmp_path: Path, banana_files: dict) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert_clean_error(
        run("fit", str(banana_files["csv"]), "-o", str(tmp_path / "m.flow"), "--device", "cuda"),
        "CUDA is not available",
    )


def test_python_dash_m_works() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "flowcli", "--help"], capture_output=True, check=False, text=True, env=env, timeout=60
    )
    assert done.returncode == 0 and "logprob" in done.stdout


PRESET_NAMES = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "flowcli" / "presets").glob("*.yaml"))


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory: pytest.TempPathFactory, banana_frame: pd.DataFrame) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.csv"
    banana_frame.head(120).to_csv(path, index=False)  # small: this runs every preset, the slow ones too
    return path


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_by_name_fits_and_serves_every_command(preset: str, tmp_path: Path, small_csv: Path) -> None:
    """`-c NAME` finds the packaged preset; the model it builds samples, scores, encodes and decodes."""
    ckpt = tmp_path / "m.flow"
    result = run("fit", str(small_csv), "-c", preset, "-o", str(ckpt), "--epochs", "1", "--seed", "0", "--quiet")
    assert result.exit_code == 0, result.stderr
    sample = run("sample", str(ckpt), "-n", "7", "--seed", "1")
    assert sample.exit_code == 0 and len(pd.read_csv(io.StringIO(sample.stdout))) == 7
    scored = run("logprob", str(ckpt), str(small_csv))
    assert scored.exit_code == 0 and np.isfinite(pd.read_csv(io.StringIO(scored.stdout))["logprob"]).all()
    latent = tmp_path / "z.csv"
    assert run("encode", str(ckpt), str(small_csv), "-o", str(latent)).exit_code == 0
    decoded = run("decode", str(ckpt), str(latent))
    assert decoded.exit_code == 0
    original = pd.read_csv(small_csv)
    np.testing.assert_allclose(pd.read_csv(io.StringIO(decoded.stdout)).to_numpy(), original.to_numpy(), atol=1e-3)


def test_the_closing_line_says_when_the_fit_stopped_early(banana_frame: pd.DataFrame) -> None:
    from flowcli.fitting import fit, summary

    config = {**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 200, "patience": 1}}
    model = fit(banana_frame, config, seed=0, device="cpu")
    assert model.info["stopped"] == "early_stopping" and model.info["epochs_run"] < 200
    line = summary(model, "m.flow")
    assert f"of {model.info['epochs_run']}, stopped early (no better validation NLL for 1 epoch)" in line


def test_metrics_to_stdout(
    tmp_path: Path, banana_files: dict, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--metrics -``: the epochs' JSON lines on stdout, as ``-`` means everywhere (it wrote a file named -)."""
    monkeypatch.chdir(tmp_path)
    result = run("fit", str(banana_files["csv"]), "-c", str(config_file), "-o", "m.flow", "--metrics", "-", "-q")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["epoch"] for line in result.stdout.splitlines()] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.flow"]


def test_the_closing_line_names_training_rows_when_none_are_held_out(banana_frame: pd.DataFrame) -> None:
    from flowcli.fitting import fit, summary

    config = {**SMALL_CONFIG, "training": {**SMALL_CONFIG["training"], "epochs": 2, "val_fraction": 0}}
    line = summary(fit(banana_frame, config, seed=0, device="cpu"), None)
    assert line.startswith("best training NLL ") and "nats/row (no rows held out)" in line


def test_device_names_flowcli_does_not_run_on_are_user_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowcli.devices import resolve_device
    from flowcli.errors import DataError

    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("mps", "meta", "xpu"):
        with pytest.raises(DataError, match=f"--device {name}: not supported by flowcli"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DataError, match=r"--device cuda:7: this machine has 1 CUDA device\(s\)"):
        resolve_device("cuda:7")


def test_rescoring_a_scored_file_drops_the_earlier_scorings_flags(tmp_path: Path, banana_files: dict) -> None:
    """Its anomaly and percentile columns belong to its logprob: replaced with it, or dropped when this run
    does not compute them (they passed through, stale beside a new logprob); a user's own column stays."""
    ckpt = str(banana_files["ckpt"])
    scored = run("logprob", ckpt, str(banana_files["csv"]), "--flag-below", "0.01", "--percentile")
    assert scored.exit_code == 0
    (tmp_path / "scored.csv").write_text(scored.stdout)
    again = run("logprob", ckpt, str(tmp_path / "scored.csv"), "--flag-below", "0.5")
    header = again.stdout.splitlines()[0].split(",")
    assert header[-2:] == ["logprob", "anomaly"] and "percentile" not in header
    plain = pd.read_csv(banana_files["csv"]).assign(percentile=7)
    plain.to_csv(tmp_path / "own.csv", index=False)
    own = run("logprob", ckpt, str(tmp_path / "own.csv"))
    assert own.stdout.splitlines()[0].split(",")[-2:] == ["percentile", "logprob"]
