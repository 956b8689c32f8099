"""Save and load models without pickle: one safetensors file whose metadata holds a JSON header.

The header carries the config, the column schema with its statistics, training metrics and package
versions, so a model is rebuilt from the file alone. A SHA-256 of the header and the tensor bytes
detects truncation and tampering. Writes go to a temporary file in the same directory, then ``os.replace``,
so an interrupted save never leaves a broken file nor destroys the previous one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .files import atomic_write_bytes

FORMAT = "flowcli-checkpoint"
# 2: MADE output units parameter-major; the checksum covers the header; optional training state.
# 3: robust standardizing with soft tails, a whitening layer in every flow, bounded conditioner inputs.
# 4: the whitening after the config's layers, a residualizing layer before them, the baseline Gaussian.
# 5: discrete parts with exact probabilities (a categorical MADE) and the flow conditioned on them; atoms.
# 6: the network of conditional questions (``conditional.ConditionalNet``).
FORMAT_VERSION = 6
HEADER_KEY = "flowcli"


def _digest(tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> str:
    """SHA-256 over the header (but its own ``sha256`` field) and every tensor's name, dtype, shape and
    bytes: a flipped digit in a stored statistic is caught as surely as one in the weights."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save(path: str | Path, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save as st_save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **header}
    full["sha256"] = _digest(tensors, full)
    data = st_save(tensors, metadata={HEADER_KEY: json.dumps(full)})
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write checkpoint: {exc.strerror or exc}") from None


def load(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint: (header, tensors). Never unpickles; refuses anything but our own format."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint: {exc.strerror or exc}") from None
    not_ours = CheckpointError(f"{path}: not a flowcli checkpoint (or it is truncated or corrupt)")
    if len(data) < 8:
        raise not_ours
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise not_ours
    try:
        raw_header = json.loads(data[8 : 8 + header_len])
        header = json.loads(raw_header["__metadata__"][HEADER_KEY])
        tensors = st_load(data)
    except (ValueError, KeyError, TypeError, SafetensorError, UnicodeDecodeError):
        raise not_ours from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise not_ours
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is not supported by this flowcli "
            f"(which reads version {FORMAT_VERSION}); refit the model (flowcli fit) or use a matching flowcli version"
        )
    if header.get("sha256") != _digest(tensors, header):
        raise CheckpointError(f"{path}: checkpoint is corrupt (checksum mismatch)")
    return header, tensors
