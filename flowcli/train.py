"""The fit loop: validation split, Adam with a schedule, gradient clipping, early stopping on the
validation NLL with the best weights kept, per-epoch metrics as JSON lines."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import torch

from .accel import mixed_precision, training_step
from .averaging import WeightAverage
from .config import Config
from .datasource import InMemoryData
from .distributed import DistContext, LogProb
from .errors import DataError, TrainingError
from .model import Flow, Model, complete_weights, load_weights
from .schema import Schema
from .trainstate import LearningRate, ResumePoint, TrainState, data_fingerprint

VAL_BATCH = 8192


@dataclass
class EpochReport:
    epoch: int
    epochs: int
    train_nll: float
    val_nll: float
    best_val_nll: float
    seconds: float
    lr: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "train_nll": self.train_nll,
            "val_nll": self.val_nll,
            "best_val_nll": self.best_val_nll,
            "seconds": round(self.seconds, 6),
            "lr": self.lr,
        }


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"--device {name}: CUDA is not available on this machine (use --device auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DataError(f"--device {name}: unknown device; allowed: auto, cpu, cuda, cuda:N") from None


def split_rows(n: int, val_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random train/validation row indices; validation is empty when the fraction or the table is too small."""
    order = torch.randperm(n, generator=generator)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 10:
        n_val = max(n_val, 1)
    else:
        n_val = 0
    return order[n_val:], order[:n_val]


@torch.no_grad()
def mean_nll(flow: Flow, data: torch.Tensor) -> float:
    flow.eval()
    total = 0.0
    for start in range(0, len(data), VAL_BATCH):
        total += -flow.log_prob(data[start : start + VAL_BATCH]).double().sum().item()
    return total / max(len(data), 1)


@torch.no_grad()
def validation_nll(flow: Flow, data: Any, dist: DistContext) -> tuple[float, float]:
    """Summed NLL and row count of the validation rows of every rank (sums all-reduced)."""
    flow.eval()
    total, count = 0.0, 0
    for batch in data.validation(VAL_BATCH):
        total += -flow.log_prob(batch).double().sum().item()
        count += len(batch)
    total, count = dist.sum(total, count)
    return total, count


def make_optimizer(flow: Flow, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where this torch build supports it (about 2 ms saved per
    step of a 5-layer MAF on CPU), else the standard implementation."""
    try:
        return torch.optim.Adam(flow.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(flow.parameters(), lr=lr, weight_decay=weight_decay)


MAX_FAILURES = 5  # consecutive non-finite steps before a run is declared diverged


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during ``fit``. ``model`` holds the best weights so far and the training state at the end
    of the last completed epoch (None if no epoch completed), so the run can be saved and resumed."""

    def __init__(self, model: Model | None) -> None:
        super().__init__()
        self.model = model


class Diverged(TrainingError):
    """The loss stayed non-finite after repeated undo-and-halve attempts. ``model`` as for Interrupted."""

    def __init__(self, message: str, model: Model | None) -> None:
        super().__init__(message)
        self.model = model


class StepGuard:
    """Copies of the weights and optimizer state from before the latest optimizer step, so a step
    that produced non-finite values can be undone. Buffers are reused: a copy per step, no allocation."""

    def __init__(self, params: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        self.params, self.optimizer = params, optimizer
        self.saved_params = [p.detach().clone() for p in params]
        self.saved_state: list[dict[str, torch.Tensor] | None] = [None] * len(params)
        self.saved_step = 0

    @torch.no_grad()
    def save(self, step: int) -> None:
        self.saved_step = step
        for i, p in enumerate(self.params):
            self.saved_params[i].copy_(p)
            state = self.optimizer.state.get(p)
            if not state:
                self.saved_state[i] = None
                continue
            saved = self.saved_state[i]
            if saved is None or saved.keys() != state.keys():
                self.saved_state[i] = {k: v.clone() for k, v in state.items()}
            else:
                for k, v in state.items():
                    saved[k].copy_(v)

    @torch.no_grad()
    def restore(self) -> int:
        for i, p in enumerate(self.params):
            p.copy_(self.saved_params[i])
            saved = self.saved_state[i]
            if saved is None:
                self.optimizer.state.pop(p, None)
            else:
                self.optimizer.state[p] = {k: v.clone() for k, v in saved.items()}
        return self.saved_step


def _clone_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, torch.Tensor]]:
    return {
        int(i): {k: torch.as_tensor(v).detach().clone() for k, v in values.items()}
        for i, values in optimizer.state_dict()["state"].items()
    }


def _load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[int, dict[str, torch.Tensor]]) -> None:
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": {i: dict(v) for i, v in state.items()}, "param_groups": groups})


def reference_rows(data: Any, limit: int = 200_000) -> tuple[torch.Tensor, str]:
    """Rows for the anomaly thresholds: held-out rows, which are the honest reference (training rows
    score too well); training rows only when nothing was held out. At most ``limit`` rows."""
    parts, n = [], 0
    for batch in data.validation(65536):
        parts.append(batch)
        n += len(batch)
        if n >= limit:
            break
    if parts:
        return torch.cat(parts)[:limit], "validation"
    return data.init_batch(limit), "training"


def fit(
    frame: pd.DataFrame,
    config: Config,
    *,
    device: torch.device,
    seed: int | None = None,
    metrics_file: IO[str] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    schema: Schema | None = None,
    resume: ResumePoint | None = None,
    data: Any = None,
    dist: DistContext | None = None,
) -> Model:
    """Fit a flow to ``frame`` as ``config`` says; returns the model with its best validation weights.

    The returned model carries ``train_state`` (the state at the end of the last epoch), which
    ``save_model`` stores so that ``resume=load_resume_point(path)`` continues the run; with the same
    data, config and seed on CPU the result is bit-identical to an uninterrupted run. A non-finite loss
    or gradient undoes the last step (weights and Adam state), halves the learning rate and goes on;
    after ``MAX_FAILURES`` in a row ``Diverged`` is raised. Ctrl-C raises ``Interrupted``. Both carry
    the best model so far (or None before the first epoch ended).

    ``data`` (a source from ``datasource.py``: a rank's shard, or Parquet streamed from disk) replaces
    ``frame``; ``dist`` is the process group (``distributed.py``) when several processes train one model.
    """
    dist = dist or DistContext(device=device)
    if resume is not None and data is not None:
        raise DataError("resume: only for a table fitted in memory by one process (not streamed or distributed)")
    if resume is not None:
        seed, schema = resume.info.get("seed"), resume.schema
    if seed is not None:
        torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    if dist.active:
        generator.manual_seed(generator.initial_seed() + 7919 * dist.rank)  # ranks shuffle differently
    tc = config.training
    dtype = torch.get_default_dtype()
    fingerprint = ""  # streamed or sharded data is not fingerprinted (no resume for those)
    if data is None:
        schema = schema or Schema.infer(frame, config.columns)
        matrix, _ = schema.to_features(frame)
        fingerprint = data_fingerprint(matrix)
        if resume is not None and resume.state.data_sha256 != fingerprint:
            raise DataError(
                f"the data differs from the table the run in {resume.path} was trained on; resume needs the same table"
            )
        if tc.max_rows and len(matrix) > tc.max_rows:
            matrix = matrix[torch.randperm(len(matrix), generator=generator)[: tc.max_rows].numpy()]
        rows = torch.as_tensor(matrix, dtype=dtype)
        train_idx, val_idx = split_rows(len(rows), tc.val_fraction, generator)
        data = InMemoryData(
            schema, rows[train_idx].to(device), rows[val_idx].to(device), dist.local_batch(tc.batch_size)
        )
    schema = data.schema
    n_train, n_val = (int(n) for n in dist.sum(data.n_train, data.n_val))

    flow = Flow(schema, config).to(device=device, dtype=dtype)
    flow.initialize(data.init_batch(4096))
    # After initialize: DDP broadcasts rank 0's (data-initialized) weights to every rank when built.
    step_module = training_step(dist.wrap(LogProb(flow)), tc.compile)
    optimizer = make_optimizer(flow, tc.lr, tc.weight_decay)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    guard = StepGuard(params, optimizer)
    steps_per_epoch = int(dist.min(data.steps_per_epoch()))
    lr = LearningRate(tc.lr, tc.schedule, tc.epochs * steps_per_epoch, max(1, tc.patience // 3))
    average = WeightAverage(params, tc.ema) if tc.ema > 0 else None

    best_val, best_state, best_epoch = math.inf, copy.deepcopy(flow.state_dict()), 0
    history: list[dict[str, Any]] = []
    failures, seconds_before, first_epoch = 0, 0.0, 1
    snapshot: TrainState | None = None
    if resume is not None:
        st = resume.state
        load_weights(flow, st.weights, resume.path)
        _load_optimizer_state(optimizer, st.optimizer)
        if average is not None:
            # A run saved by a flowcli without averaging starts its average from the current weights.
            average.load(st.average if st.average else [p.detach() for p in params])
        # The learning-rate law continues; only its horizon follows the (possibly longer) plan.
        lr = dataclasses.replace(st.lr, total_steps=tc.epochs * steps_per_epoch)
        torch.set_rng_state(st.torch_rng)
        generator.set_state(st.shuffle_rng)
        best_val, best_epoch, failures, seconds_before = st.best_val, st.best_epoch, st.failures, st.seconds
        best_state = {k: v.to(device=device) for k, v in complete_weights(flow, resume.best_weights).items()}
        history, first_epoch, snapshot = list(st.history), st.epoch + 1, st

    started = time.perf_counter()

    def finish(stopped: str) -> Model | None:
        """The best model so far with the state at the end of the last completed epoch (None if no
        epoch ended, or if no step ever succeeded: an untrained model is not worth saving)."""
        if snapshot is None or snapshot.lr.step == 0 or not math.isfinite(snapshot.best_val):
            return None
        flow.load_state_dict(best_state)
        info = {
            "epochs_run": len(snapshot.history),
            "best_epoch": snapshot.best_epoch,
            "best_val_nll": snapshot.best_val,
            "fit_seconds": round(snapshot.seconds, 3),
            "n_train": n_train,
            "n_val": n_val,
            "world_size": dist.world,
            "seed": seed,
            "device": str(device),
            "stopped": stopped,
            "metrics": snapshot.history,
        }
        model = Model(schema, config, flow.to(torch.float64), info)
        model.train_state = snapshot
        reference, source = reference_rows(data)
        info["logprob_quantiles"] = logprob_quantiles(model.log_prob_features(reference.double().cpu().numpy()), source)
        return model

    amp = mixed_precision(flow, tc.amp, device)
    amp.__enter__()  # left in the `finally` below
    try:
        stopped = "completed"
        for epoch in range(first_epoch, tc.epochs + 1):
            t0 = time.perf_counter()
            flow.train()
            total, count = 0.0, 0
            for batch in dist.lockstep(data.epoch(generator)):
                with amp.step():
                    loss = -step_module(batch).mean()
                # Every rank must take the same branch (backward runs DDP's all-reduce); the gradient
                # norm below is computed from all-reduced gradients, so it agrees by itself.
                finite = dist.all_true(torch.isfinite(loss))
                if finite:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    finite = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(flow.parameters(), tc.grad_clip)))
                if not finite:
                    # Non-finite values mean the last step went too far: undo it, halve the rate, go on.
                    optimizer.zero_grad(set_to_none=True)
                    lr.step = guard.restore()
                    lr.nan_scale *= 0.5
                    failures += 1
                    if failures >= MAX_FAILURES:
                        raise Diverged(
                            f"epoch {epoch}: the loss was non-finite {failures} times in a row, even after "
                            f"halving the learning rate each time (now {lr.value():.3g}); check the data or lower "
                            "training.lr",
                            None,
                        )
                    continue
                failures = 0
                guard.save(lr.step)
                for group in optimizer.param_groups:
                    group["lr"] = lr.value()
                optimizer.step()
                lr.step += 1
                if average is not None:
                    average.update(lr.step)
                total += loss.item() * len(batch)
                count += len(batch)
            total, count = dist.sum(total, count)
            train_nll = total / count if count else math.inf
            with average.swapped() if average is not None else contextlib.nullcontext():
                # Validated, and kept as the best model, with the averaged weights when averaging is on.
                val_total, val_count = validation_nll(flow, data, dist)
                val_nll = val_total / val_count if val_count else train_nll
                if val_nll < best_val:
                    best_val, best_epoch = val_nll, epoch
                    best_state = copy.deepcopy(flow.state_dict())
            lr.end_epoch(val_nll)
            report = EpochReport(epoch, tc.epochs, train_nll, val_nll, best_val, time.perf_counter() - t0, lr.value())
            # One assignment, so an interrupt sees either the previous epoch's state or this one's.
            snapshot = TrainState(
                epoch=epoch,
                weights={k: v.detach().clone() for k, v in flow.state_dict().items()},
                optimizer=_clone_optimizer_state(optimizer),
                lr=dataclasses.replace(lr),
                average=[a.detach().clone() for a in average.average] if average is not None else [],
                torch_rng=torch.get_rng_state(),
                shuffle_rng=generator.get_state(),
                best_val=best_val,
                best_epoch=best_epoch,
                failures=failures,
                seconds=seconds_before + time.perf_counter() - started,
                data_sha256=fingerprint,
                history=[*history, report.to_dict()],
            )
            history = snapshot.history
            if metrics_file is not None:
                metrics_file.write(json.dumps(report.to_dict()) + "\n")
                metrics_file.flush()
            if on_epoch is not None:
                on_epoch(report)
            if epoch - best_epoch >= tc.patience:
                stopped = "early_stopping"
                break
    except KeyboardInterrupt:
        raise Interrupted(finish("interrupted")) from None
    except Diverged as exc:
        raise Diverged(str(exc), finish("diverged")) from None
    finally:
        amp.__exit__(None, None, None)

    model = finish(stopped)
    if model is None:
        raise TrainingError("training never reached a finite validation loss; check the data or lower training.lr")
    return model


# Quantile levels kept in the checkpoint: every percent, plus fine ones in both tails (anomaly
# thresholds live in the lower tail).
QUANTILE_LEVELS = sorted(
    {0.0, 0.0005, 0.001, 0.002, 0.005, 0.995, 0.998, 0.999, 0.9995, 1.0}
    | {round(i / 100, 2) for i in range(1, 100)}
    | {round(0.01 + i / 1000, 3) for i in range(-9, 10)}
)


def logprob_quantiles(values: np.ndarray, source: str) -> dict[str, Any]:
    """Quantiles of ``logprob`` on held-out rows: what ``--flag-below`` and ``--percentile`` compare against."""
    finite = values[np.isfinite(values)]
    return {
        "source": source,
        "rows": len(values),
        "levels": QUANTILE_LEVELS,
        "values": np.quantile(finite, QUANTILE_LEVELS).tolist() if len(finite) else [],
    }


def write_metrics_path(ckpt: str | Path) -> Path:
    """Default metrics file beside the checkpoint: ``model.flow`` -> ``model.metrics.jsonl``."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.stem + ".metrics.jsonl") if ckpt.suffix else ckpt.with_name(ckpt.name + ".metrics.jsonl")
