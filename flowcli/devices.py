"""Which torch device a command runs on. At the bottom of the layering: data sources, the training loop,
the fit API and the CLI all ask here, so ``--device`` means the same everywhere."""

from __future__ import annotations

import torch

from .errors import DataError


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"--device {name}: CUDA is not available on this machine (use --device auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DataError(f"--device {name}: unknown device; allowed: auto, cpu, cuda, cuda:N") from None
