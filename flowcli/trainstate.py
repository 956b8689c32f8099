"""The state of a training run at the end of an epoch, so ``flowcli fit --resume`` continues it exactly.

Stored inside the checkpoint next to the model, without pickle: tensors (current weights, Adam moments,
the random generators' states as uint8 tensors) go into the safetensors data under ``train_state/``,
and plain numbers (epoch, learning-rate law, early-stopping bookkeeping, metrics history) go into the
JSON header. With Adam this roughly triples the file (current weights and buffers, two moments).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import CheckpointError, DataError

PREFIX = "train_state/"


@dataclass
class LearningRate:
    """The learning rate as one law: ``base * nan_scale * plateau_scale * cosine(step)``.

    Kept as plain numbers instead of torch scheduler objects so that it composes with the halving
    after a non-finite loss, survives a JSON round trip for ``--resume``, and, for the cosine schedule,
    is a closed form of the step: a resumed run with a longer plan simply follows the longer curve.
    The plateau rule mirrors ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (factor 0.5, relative
    threshold 1e-4).
    """

    base: float
    schedule: str
    total_steps: int
    plateau_patience: int
    step: int = 0
    nan_scale: float = 1.0
    plateau_scale: float = 1.0
    plateau_best: float = math.inf
    plateau_bad: int = 0

    def value(self) -> float:
        lr = self.base * self.nan_scale * self.plateau_scale
        if self.schedule == "cosine":
            progress = min(self.step, self.total_steps) / max(self.total_steps, 1)
            lr = 0.01 * lr + 0.99 * lr * (1 + math.cos(math.pi * progress)) / 2
        return lr

    def end_epoch(self, val_nll: float) -> None:
        if self.schedule != "plateau" or not math.isfinite(val_nll):
            return
        if val_nll < self.plateau_best * (1 - 1e-4):
            self.plateau_best, self.plateau_bad = val_nll, 0
        else:
            self.plateau_bad += 1
        if self.plateau_bad > self.plateau_patience:
            self.plateau_scale *= 0.5
            self.plateau_bad = 0


@dataclass
class TrainState:
    """Everything a run needs to continue bit for bit from the end of epoch ``epoch``.

    The trainer (``train.Trainer``) keeps its bookkeeping in one of these while it runs; at the end of
    each epoch it captures the tensors below into a copy, which is what a checkpoint packs."""

    lr: LearningRate
    epoch: int = 0  # epochs completed
    best_val: float = math.inf
    best_epoch: int = 0
    failures: int = 0  # consecutive non-finite steps so far
    seconds: float = 0.0
    data_sha256: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    # Captured at the end of an epoch (empty in the live state of a running trainer):
    weights: dict[str, Tensor] = field(default_factory=dict)  # current weights (the model holds the best ones)
    optimizer: dict[int, dict[str, Tensor]] = field(default_factory=dict)  # per parameter (Adam: step, moments)
    average: list[Tensor] = field(default_factory=list)  # the weight average (training.ema), by parameter
    torch_rng: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.uint8))
    shuffle_rng: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.uint8))

    def pack(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """(JSON-able header part, tensors with the ``train_state/`` prefix) for the checkpoint."""
        tensors = {f"{PREFIX}weights/{k}": v for k, v in self.weights.items()}
        for index, values in self.optimizer.items():
            for name, value in values.items():
                tensors[f"{PREFIX}optimizer/{index}/{name}"] = torch.as_tensor(value)
        for index, value in enumerate(self.average):
            tensors[f"{PREFIX}average/{index}"] = value
        tensors[f"{PREFIX}rng/torch"] = self.torch_rng
        tensors[f"{PREFIX}rng/shuffle"] = self.shuffle_rng
        numbers = ("epoch", "best_val", "best_epoch", "failures", "seconds", "data_sha256", "history")
        meta = {k: getattr(self, k) for k in numbers}
        meta["lr"] = dataclasses.asdict(self.lr)
        return meta, tensors

    @classmethod
    def unpack(cls, meta: dict[str, Any], tensors: dict[str, Tensor]) -> TrainState:
        weights: dict[str, Tensor] = {}
        optimizer: dict[int, dict[str, Tensor]] = {}
        average: dict[int, Tensor] = {}
        for key, value in tensors.items():
            if key.startswith(f"{PREFIX}weights/"):
                weights[key[len(f"{PREFIX}weights/") :]] = value
            elif key.startswith(f"{PREFIX}optimizer/"):
                index, name = key[len(f"{PREFIX}optimizer/") :].split("/", 1)
                optimizer.setdefault(int(index), {})[name] = value
            elif key.startswith(f"{PREFIX}average/"):
                average[int(key[len(f"{PREFIX}average/") :])] = value
        return cls(
            epoch=int(meta["epoch"]),
            weights=weights,
            optimizer=optimizer,
            lr=LearningRate(**meta["lr"]),
            torch_rng=tensors[f"{PREFIX}rng/torch"],
            shuffle_rng=tensors[f"{PREFIX}rng/shuffle"],
            best_val=float(meta["best_val"]),
            best_epoch=int(meta["best_epoch"]),
            failures=int(meta["failures"]),
            seconds=float(meta.get("seconds", 0.0)),  # not stored since checkpoints are reproducible
            data_sha256=str(meta["data_sha256"]),
            history=list(meta["history"]),
            average=[average[i] for i in range(len(average))],
        )


def split_tensors(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(model weights, training-state tensors) of a checkpoint's tensors."""
    model = {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
    state = {k: v for k, v in tensors.items() if k.startswith(PREFIX)}
    return model, state


def data_fingerprint(matrix: np.ndarray) -> str:
    """SHA-256 of the training matrix, so a resumed run can check it is given the same data."""
    return hashlib.sha256(np.ascontiguousarray(matrix, dtype=np.float64).tobytes()).hexdigest()


@dataclass
class ResumePoint:
    """A checkpoint to continue: its model (best weights), run info and training state."""

    path: str
    config: Any
    schema: Any
    info: dict[str, Any]
    best_weights: dict[str, Tensor]
    state: TrainState
    planned_epochs: int = 0  # the saved run's own plan (``config`` holds the continued run's)


def load_resume_point(path: str, epochs: int | None = None) -> ResumePoint:
    """Read a checkpoint written by ``fit`` with its training state, to continue up to ``epochs`` in all
    (default: its config's epochs). Errors say why a run cannot be continued."""
    from . import checkpoint
    from .config import parse_config
    from .errors import ConfigError
    from .schema import Schema

    header, tensors = checkpoint.load(path)
    model_tensors, state_tensors = split_tensors(tensors)
    if "train_state" not in header:
        raise CheckpointError(f"{path}: the checkpoint holds no training state to resume from")
    try:
        config = parse_config(header["config"])
        schema = Schema.from_dict(header["schema"])
        state = TrainState.unpack(header["train_state"], state_tensors)
        info = dict(header["info"])
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the training state in the checkpoint is invalid ({exc})") from None
    done = state.epoch
    if int(info.get("world_size", 1)) > 1:  # its state is of one rank's share of the rows, among others
        raise DataError(
            f"{path}: the run was fitted by {info['world_size']} processes (--nproc); --resume continues only a "
            "table fitted in memory by one process"
        )
    if info.get("stopped") == "early_stopping":
        raise DataError(
            f"{path}: the run stopped early at epoch {done} (no better validation NLL for "
            f"{config.training.patience} epochs); there is nothing to resume"
        )
    planned = config.training.epochs
    if epochs is not None:
        config.training.epochs = epochs
    # A run stopped while its held-out rows were scored, after its last epoch: resuming it to that end
    # trains nothing and scores them in full (its checkpoint holds the quantiles of 8,192 rows only).
    early = done - state.best_epoch >= config.training.patience  # it had stopped early, then was interrupted
    rescore = info.get("stopped") == "interrupted" and (config.training.epochs == done or early)
    if config.training.epochs <= done and not rescore:
        raise DataError(f"{path}: the run already has {done} epochs; pass --epochs N with N > {done} to train longer")
    return ResumePoint(str(path), config, schema, info, model_tensors, state, planned)
