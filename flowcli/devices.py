"""Which torch device a command runs on, and with how many CPU threads. At the bottom of the layering:
data sources, the training loop, the fit API and the CLI all ask here, so ``--device`` and ``--threads``
mean the same everywhere."""

from __future__ import annotations

import os

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


def default_threads() -> int:
    """The CPU threads a command uses unless told: ``OMP_NUM_THREADS`` when it is set to a positive integer
    (its first level, for a nested setting such as ``4,2``), else the number of CPUs this process may run on.

    Torch's own default counts the machine's cores, also when a container, ``taskset`` or a batch
    scheduler gives the process fewer of them; then its threads contend for the same cores. On a loaded
    2-core machine a default fit took 49 s/epoch with torch's default threads and 3.75 s with one thread."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux: no affinity mask to read
        return os.cpu_count() or 1


def use_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (``None``: ``default_threads()``); returns the count in use.
    The one place flowcli calls ``torch.set_num_threads``."""
    n = default_threads() if threads is None else threads
    if n < 1:
        raise DataError(f"--threads {n}: the number of threads must be at least 1")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
