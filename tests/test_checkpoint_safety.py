"""Hostile and damaged checkpoints: loading never runs code, and any damage is a clear error.

The malicious files here carry live payloads (each test first proves that the payload does run when
handed to pickle or torch.load) and then shows that every flowcli entry point refuses the file
without running it.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from flowcli import checkpoint
from flowcli.cli import app
from flowcli.config import parse_config
from flowcli.errors import CheckpointError, FlowcliError
from flowcli.fitting import fit
from flowcli.model import load_model, save_model
from flowcli.trainstate import load_resume_point

runner = CliRunner()


class Payload:
    """Unpickling this creates the directory ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker), protocol=2)


def evil_torch_zip(path: Path, marker: Path) -> None:
    """The layout torch.save writes (archive/data.pkl, version, byteorder), with a malicious data.pkl."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", evil_pickle(marker))
        archive.writestr("evil/byteorder", "little")
        archive.writestr("evil/version", "3\n")


def every_loader(path: Path, tmp_path: Path) -> list[str]:
    """Hand ``path`` to every way flowcli reads a checkpoint; return the error messages."""
    messages = []
    for loader in (load_model, checkpoint.load, load_resume_point):
        with pytest.raises(FlowcliError) as exc:
            loader(str(path))
        messages.append(str(exc.value))
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    for args in (
        ["sample", str(path), "-n", "2"],
        ["logprob", str(path), str(data)],
        ["encode", str(path), str(data)],
        ["decode", str(path), str(data)],
        ["fit", str(data), "-o", str(tmp_path / "o.flow"), "--resume", str(path)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "Traceback" not in result.stderr, result.stderr
        messages.append(result.stderr.strip())
    return messages


def test_a_pickle_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    proof = tmp_path / "proof"
    pickle.loads(evil_pickle(proof))
    assert proof.is_dir()  # the payload is live

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.flow"
    evil.write_bytes(evil_pickle(marker))
    for message in every_loader(evil, tmp_path):
        assert "not a flowcli checkpoint" in message
    assert not marker.exists()


def test_a_torch_archive_with_a_malicious_data_pkl_is_refused_without_running_it(tmp_path: Path) -> None:
    proof = tmp_path / "proof"
    evil_torch_zip(tmp_path / "proof.pt", proof)
    torch.load(tmp_path / "proof.pt", weights_only=False)
    assert proof.is_dir()  # torch.load with pickle enabled would run it

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.flow"
    evil_torch_zip(evil, marker)
    for message in every_loader(evil, tmp_path):
        assert "not a flowcli checkpoint" in message
    assert not marker.exists()


def test_a_yaml_config_with_python_tags_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"layers: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,2\n3,4\n5,7\n")
    result = runner.invoke(app, ["fit", str(data), "-c", str(config), "-o", str(tmp_path / "m.flow")])
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and "malformed YAML" in result.stderr
    assert not marker.exists()


# --- damage and versions -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small but complete checkpoint, training state included (about 10 kB)."""
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.5, 3.0, 4.5, 6.0], "b": [1.0, 0.5, 2.0, 2.5, 4.0, 3.5]})
    config = parse_config(
        {"layers": [{"type": "maf", "hidden": [4]}, "permute"], "training": {"epochs": 2, "batch_size": 3}}
    )
    path = tmp_path_factory.mktemp("small") / "m.flow"
    save_model(fit(frame, config, device=torch.device("cpu"), seed=0), str(path))
    load_model(str(path))
    return path.read_bytes()


def header_length(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def test_truncation_at_any_of_many_offsets_is_detected(small_checkpoint: bytes, tmp_path: Path) -> None:
    end = header_length(small_checkpoint)
    n = len(small_checkpoint)
    path = tmp_path / "t.flow"
    for cut in sorted({0, 1, 7, 8, 9, 64, end // 2, end - 1, end, end + 1, end + 4, (end + n) // 2, n - 4, n - 1}):
        path.write_bytes(small_checkpoint[:cut])
        with pytest.raises(CheckpointError, match="not a flowcli checkpoint|corrupt"):
            load_model(str(path))


def test_a_flipped_byte_anywhere_is_detected(small_checkpoint: bytes, tmp_path: Path) -> None:
    """Bytes flipped in turn: the length prefix, and 400 random offsets each in the header and in the
    tensor data (every offset of the file was checked once, taking two minutes; none went unnoticed)."""
    end = header_length(small_checkpoint)
    rng = random.Random(0)
    offsets = [*range(8), *rng.sample(range(8, end), 400), *rng.sample(range(end, len(small_checkpoint)), 400)]
    path = tmp_path / "f.flow"
    undetected = []
    for offset in offsets:
        data = bytearray(small_checkpoint)
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            checkpoint.load(path)
            undetected.append(offset)
        except CheckpointError:
            pass
    assert not undetected


def test_a_changed_digit_in_the_header_json_is_a_checksum_error(small_checkpoint: bytes, tmp_path: Path) -> None:
    """An edit that keeps the JSON valid (a statistic of the schema) is caught by the checksum."""
    end = header_length(small_checkpoint)
    header = small_checkpoint[8:end].decode()
    at = header.index('\\"mean\\": ') + len('\\"mean\\": ')
    digit = header[at]
    assert digit.isdigit()
    edited = header[:at] + str((int(digit) + 1) % 10) + header[at + 1 :]
    path = tmp_path / "e.flow"
    path.write_bytes(small_checkpoint[:8] + edited.encode() + small_checkpoint[end:])
    with pytest.raises(CheckpointError, match="checksum"):
        load_model(str(path))


def test_a_newer_format_version_is_a_clear_error(
    small_checkpoint: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.flow"
    path.write_bytes(small_checkpoint)
    header, tensors = checkpoint.load(path)
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 99)
    payload = {k: v for k, v in header.items() if k not in ("format", "format_version", "sha256")}
    checkpoint.save(tmp_path / "future.flow", payload, tensors)
    monkeypatch.undo()
    result = runner.invoke(app, ["sample", str(tmp_path / "future.flow"), "-n", "1"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: {tmp_path / 'future.flow'}: checkpoint format version 99 is not supported by "
        f"this flowcli (which reads version {checkpoint.FORMAT_VERSION}); refit the model (flowcli fit) or use a matching flowcli version"
    )


def test_a_safetensors_file_from_elsewhere_is_not_mistaken_for_a_checkpoint(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.ones(3)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a flowcli checkpoint"):
        load_model(str(tmp_path / "other.safetensors"))
    save_file(
        {"weight": torch.ones(3)},
        str(tmp_path / "lying.flow"),
        metadata={"flowcli": json.dumps({"format": "flowcli-checkpoint"})},
    )
    with pytest.raises(CheckpointError, match="version None is not supported"):
        load_model(str(tmp_path / "lying.flow"))
