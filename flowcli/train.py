"""The training loop: Adam with a schedule, gradient clipping, undo-and-halve after a non-finite step,
a weight average, early stopping on the validation NLL with the best weights kept, per-epoch metrics.

``Trainer`` is one run. Its bookkeeping is a ``TrainState`` (trainstate.py), the dataclass a checkpoint
packs for ``fit --resume``; the data come from a source of datasource.py, and the other processes of a
distributed run are reached through a ``DistContext`` (distributed.py), which for a single process is
a context of one rank whose collectives do nothing: one code path for every case.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from .accel import mixed_precision, training_step
from .averaging import WeightAverage
from .conditional import budget_share, fit_conditional
from .config import Config
from .discrete import fit_discrete
from .distributed import DistContext, LogProb
from .errors import TrainingError, raised_by_interrupt
from .health import WORSE_TOLERANCE, fit_warnings, gain_threshold
from .model import Flow, Model, complete_weights, load_weights
from .progress import Reporter
from .quantiles import CALIBRATION_SAMPLES, MIN_PATTERN_ROWS, SMALL_TABLE_CALIBRATION_SAMPLES, logprob_quantiles
from .trainstate import LearningRate, ResumePoint, TrainState

VAL_BATCH = 8192
# The quantiles of a stopped run's checkpoint come from this many held-out rows, without the sampled rows that
# calibrate rare patterns (``Trainer._quantiles``): Ctrl-C or SIGTERM must take effect within seconds, and with
# the full scoring a SIGTERM took 18.5 s on the 100,000 x 20 mixed table of benchmarks/mixed_fit.py (loaded
# 2-core machine; 1.7 s now). ``--resume`` scores in full at its end.
STOPPED_QUANTILE_ROWS = VAL_BATCH
MAX_FAILURES = 5  # consecutive non-finite steps before a run is declared diverged
CONDITIONAL_SEED_OFFSET = 7919  # the conditional network's generator: seeded from the run's seed, apart from it
GAUSSIAN_ROWS = 200_000  # training rows the whitening (the Gaussian the flow starts from) is fitted to
# training.weight_decay: auto, the weight decay is max(AUTO_DECAY_FLOOR, 1 / training rows) (see ``weight_decay``).
AUTO_DECAY_FLOOR = 1e-4


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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a fit. ``model`` holds the best weights so far and the training state at the end
    of the last completed epoch (None if no epoch completed), so the run can be saved and resumed."""

    def __init__(self, model: Model | None) -> None:
        super().__init__()
        self.model = model
        # How the fit was stopped (set by ``fitting.fit``): Ctrl-C exits 130, SIGTERM 143.
        self.why, self.exit_code = "interrupted", 130


class Diverged(TrainingError):
    """The loss stayed non-finite after repeated undo-and-halve attempts. ``model`` as for Interrupted."""

    def __init__(self, message: str, model: Model | None) -> None:
        super().__init__(message)
        self.model = model


AUTO_LR, AUTO_LR_EPOCHS, AUTO_LR_MAX_SCALE = 1e-3, 200, 5.0
PROGRESS_ROWS = 2_048  # rows scored or sampled between two progress lines of the final scoring


def learning_rate(setting: float | str, epochs: int) -> float:
    """The base learning rate of a run: the config's number, or for ``auto`` (the default preset's)
    1e-3 x min(5, sqrt(200 / epochs)), and 1e-3 from 200 epochs on.

    1e-3 is the best rate measured for the default over its full 200 epochs; a shorter run stops far from
    where that rate would take it. On the 50,000-row mixture of benchmarks/peers.py (nats below the true
    density): 3 epochs 3.98 at 1e-3, 1.72 at 5e-3; 10 epochs 1.61 and 0.61; 30 epochs 0.58 at 1e-3, 0.30 at
    3e-3; the same direction on penguins, penguin_measures and magic_gamma (benchmarks/RESULTS.md). Scaled
    by epochs rather than by optimizer steps: a small table takes few steps per epoch, and there a higher
    rate over the full 200 epochs scored worse (penguins' test NLL, ADBench annthyroid's AUROC)."""
    if setting == "auto":
        return AUTO_LR * min(AUTO_LR_MAX_SCALE, max(1.0, math.sqrt(AUTO_LR_EPOCHS / max(epochs, 1))))
    return float(setting)


def weight_decay(setting: float | str, n_train: int) -> float:
    """The weight decay of a run: the config's number, or for ``auto`` (the default) max(1e-4, 1 / n_train).

    Adam's weight decay adds ``decay * w`` to the gradient of the *mean* loss, so ``1 / n`` is a fixed
    Gaussian prior on every weight (unit precision) whatever the table size: it pulls hard on 60 rows
    (0.018) and fades on large tables, where 1e-4 is kept (the default preset's measured value, see the
    README). Every parameter of a flow starts at its Gaussian start (conditioners' last layers at zero,
    the whitening's offsets at zero), so the decay shrinks the model towards that Gaussian."""
    if setting == "auto":
        return max(AUTO_DECAY_FLOOR, 1.0 / max(n_train, 1))
    return float(setting)


# The parts of a flow fitted on their own before the run (``Trainer``), then frozen.
SEPARATE_PARTS = ("discrete.", "conditional.")


def trainable(flow: Flow) -> list[Tensor]:
    """The parameters the run's optimizer trains: all but those of ``SEPARATE_PARTS``."""
    return [p for name, p in flow.named_parameters() if not name.startswith(SEPARATE_PARTS)]


def make_optimizer(flow: Flow, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where this torch build supports it (about 2 ms saved per
    step of a 5-layer MAF on CPU), else the standard implementation."""
    try:
        return torch.optim.Adam(trainable(flow), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(trainable(flow), lr=lr, weight_decay=weight_decay)


class StepGuard:
    """Copies of the weights and optimizer state from before the latest optimizer step, so a step
    that produced non-finite values can be undone. Buffers are reused: a copy per step, no allocation."""

    def __init__(self, params: list[Tensor], optimizer: torch.optim.Optimizer) -> None:
        self.params, self.optimizer = params, optimizer
        self.saved_params = [p.detach().clone() for p in params]
        self.saved_state: list[dict[str, Tensor] | None] = [None] * len(params)
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


def _clone_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Tensor]]:
    return {
        int(i): {k: torch.as_tensor(v).detach().clone() for k, v in values.items()}
        for i, values in optimizer.state_dict()["state"].items()
    }


def _load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[int, dict[str, Tensor]]) -> None:
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": {i: dict(v) for i, v in state.items()}, "param_groups": groups})


def reference_rows(data: Any, limit: int = 200_000) -> tuple[Tensor, str]:
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


class Trainer:
    """One training run of a flow on a data source (in memory, streamed, or a rank's shard).

    ``state`` is the run's bookkeeping (epoch, learning-rate law, early stopping, failures, history);
    ``saved`` is the state captured at the end of the last completed epoch, with the tensors that a
    resume needs, and ``best_weights`` the weights of the best validation NLL so far. A non-finite loss
    or gradient undoes the last step (weights and Adam state), halves the learning rate and goes on;
    after ``MAX_FAILURES`` in a row ``Diverged`` is raised. Ctrl-C raises ``Interrupted``. Both carry the
    best model so far (or None before the first epoch ended).
    """

    def __init__(
        self,
        data: Any,
        config: Config,
        dist: DistContext,
        seed: int,
        generator: torch.Generator,
        reporter: Reporter | None = None,
    ) -> None:
        self.data, self.config, self.dist, self.seed, self.generator = data, config, dist, seed, generator
        # Progress of the separately fitted parts, the epochs' steps and the final scoring (None: silent).
        self.reporter = reporter or Reporter(quiet=True)
        tc = config.training
        self.n_train, self.n_val = (int(n) for n in dist.sum(data.n_train, data.n_val))
        self.flow = Flow(data.schema, config).to(device=dist.device, dtype=torch.get_default_dtype())
        self.flow.initialize(data.init_batch(4096), data.init_batch(GAUSSIAN_ROWS))
        # The separately fitted parts learn from the same rows, read once (a streamed source reads its files).
        separate_rows = self._training_and_validation_rows()
        self.discrete_fit = self._fit_discrete(*separate_rows)
        self.conditional_fit = self._fit_conditional(*separate_rows) if tc.conditional else None
        self.flow.conditional.requires_grad_(False)  # never trained by the run, fitted or not
        # After initialize: DDP broadcasts rank 0's (data-initialized) weights to every rank when built.
        self.step_module = training_step(dist.wrap(LogProb(self.flow)), tc.compile)
        self.weight_decay = weight_decay(tc.weight_decay, self.n_train)
        self.lr = learning_rate(tc.lr, tc.epochs)
        self.optimizer = make_optimizer(self.flow, self.lr, self.weight_decay)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.guard = StepGuard(self.params, self.optimizer)
        self.average = WeightAverage(self.params, tc.ema) if tc.ema > 0 else None
        self.steps_per_epoch = int(dist.min(data.steps_per_epoch()))
        lr = LearningRate(self.lr, tc.schedule, tc.epochs * self.steps_per_epoch, max(1, tc.patience // 3))
        self.state = TrainState(lr=lr, data_sha256=data.fingerprint)
        self.saved: TrainState | None = None
        self.best_weights = copy.deepcopy(self.flow.state_dict())
        self.start_weights = self.best_weights  # the Gaussian start (epoch 0); never modified in place
        self.gaussian_nll, self.start_nll = self._score_start()

    def _training_and_validation_rows(self) -> tuple[Tensor, Tensor]:
        """Up to ``GAUSSIAN_ROWS`` training rows, and as many validation rows (the training rows when none
        are held out): what the separately fitted parts are fitted and early-stopped on."""
        train = self.data.init_batch(GAUSSIAN_ROWS)
        parts, count = [], 0
        for batch in self.data.validation(VAL_BATCH) if self.n_val else []:
            parts.append(batch)
            count += len(batch)
            if count >= GAUSSIAN_ROWS:
                break
        return train, torch.cat(parts)[:GAUSSIAN_ROWS] if parts else train

    def _fit_conditional(self, train: Tensor, val: Tensor) -> dict[str, float]:
        """Fit the network of conditional questions (``conditional.fit_conditional``), frozen by ``__init__``: it is
        not part of the joint density the run trains. With ``training.conditional: false`` it is not fitted
        (it stays frozen at its start) and ``questions.require_conditional`` refuses the questions."""
        # Its own random streams (shuffles and questions from its own generator, the dequantization noise of
        # a forked global stream): the joint fit draws what it drew without this network, whatever it does.
        generator = torch.Generator(device=self.generator.device).manual_seed(self.seed + CONDITIONAL_SEED_OFFSET)
        devices = [self.dist.device] if self.dist.device.type == "cuda" else []
        self.reporter.phase("fitting the conditional-questions network")
        started = time.perf_counter()
        with torch.random.fork_rng(devices=devices):
            report = fit_conditional(
                self.flow.conditional,
                self.flow.preprocess,
                train,
                val,
                generator,
                share=budget_share(self.config.training.epochs),
                progress=self.reporter.status,
            )
        self.reporter.phase_done(
            f"conditional-questions network: validation NLL {report['val_nll']:.4f} (standardized units) after "
            f"{report['epochs']} epochs ({time.perf_counter() - started:.1f} s)"
        )
        return report

    def _fit_discrete(self, train: Tensor, val: Tensor) -> dict[str, float] | None:
        """Fit the flow's discrete part on its own (``discrete.fit_discrete``: a factor of the likelihood with
        parameters of its own), then freeze it: the optimizer of the run trains the continuous part only."""
        discrete = self.flow.discrete
        if discrete is None:
            return None
        self.reporter.phase(f"fitting the discrete part ({len(discrete.levels)} features)")
        started = time.perf_counter()
        codes, val_codes = self.flow.codes(train), self.flow.codes(val)
        report = fit_discrete(discrete, codes, val_codes, self.generator, progress=self.reporter.status)
        discrete.requires_grad_(False)
        self.reporter.phase_done(
            f"discrete part: validation NLL {report['val_nll']:.4f} nats/row (the training frequencies: "
            f"{report['start_val_nll']:.4f}) after {report['epochs']} epochs ({time.perf_counter() - started:.1f} s)"
        )
        return report

    @torch.no_grad()
    def _score_start(self) -> tuple[float, float]:
        """Mean NLL of the Gaussian start (``Flow.gaussian_log_prob``) and of the untrained flow on the
        validation rows of every rank (the training rows when none are held out)."""
        self.flow.eval()
        totals = [0.0, 0.0, 0.0]
        batches = self.data.validation(VAL_BATCH) if self.n_val else [self.data.init_batch(GAUSSIAN_ROWS)]
        for batch in batches:
            totals[0] -= self.flow.gaussian_log_prob(batch).double().sum().item()
            totals[1] -= self.flow.log_prob(batch).double().sum().item()
            totals[2] += len(batch)
        gaussian, start, count = self.dist.sum(*totals)
        return (gaussian / count, start / count) if count else (math.nan, math.nan)

    def restore(self, point: ResumePoint) -> None:
        """Continue the run saved in ``point`` (the same data, config and seed)."""
        saved = point.state
        # The network of conditional questions takes a share of its budget from the planned epochs
        # (``conditional.budget_share``): a run continued to a longer plan that gives another share keeps the
        # network ``__init__`` fitted for that plan, as a run planned that long from the start has it.
        fresh = {k: v.clone() for k, v in self.flow.state_dict().items() if k.startswith("conditional.")}
        refitted = budget_share(point.planned_epochs or self.config.training.epochs) != budget_share(
            self.config.training.epochs
        )
        load_weights(self.flow, saved.weights, point.path)
        _load_optimizer_state(self.optimizer, saved.optimizer)
        if self.average is not None:
            # A run saved by a flowcli without averaging starts its average from the current weights.
            self.average.load(saved.average if saved.average else [p.detach() for p in self.params])
        torch.set_rng_state(saved.torch_rng)
        self.generator.set_state(saved.shuffle_rng)
        best = complete_weights(self.flow, point.best_weights)
        if refitted:
            best = {**best, **fresh}
            self.flow.load_state_dict({**self.flow.state_dict(), **fresh})
        self.best_weights = {k: v.to(device=self.dist.device) for k, v in best.items()}
        # The learning-rate law continues; only its horizon follows the (possibly longer) plan.
        total_steps = self.config.training.epochs * self.steps_per_epoch
        lr = dataclasses.replace(saved.lr, total_steps=total_steps)
        self.state = dataclasses.replace(saved, lr=lr, history=list(saved.history))
        self.saved = saved
        # The separately fitted parts are the saved run's, fitted before its first epoch (``__init__`` fitted
        # them again, which the loaded weights replace): the start the run may fall back to holds them too,
        # and the start it is judged against holds the saved discrete part.
        loaded = {k: v for k, v in self.flow.state_dict().items() if k.startswith(SEPARATE_PARTS)}
        self.start_weights = {**self.start_weights, **{k: v.clone() for k, v in loaded.items()}}
        if not refitted:
            self.conditional_fit = point.info.get("conditional_fit", self.conditional_fit)
        if self.flow.discrete is not None:
            self.gaussian_nll, self.start_nll = self._score_start()
            self.discrete_fit = point.info.get("discrete_fit", self.discrete_fit)

    def step(self, batch: Tensor, amp: Any) -> float | None:
        """One optimizer step; the batch's summed NLL, or None when the step was undone."""
        with amp.step():
            loss = -self.step_module(batch).mean()
        # Every rank must take the same branch (backward runs DDP's all-reduce); the gradient norm
        # below is computed from all-reduced gradients, so it agrees by itself.
        finite = self.dist.all_true(torch.isfinite(loss))
        if finite:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.training.grad_clip)
            finite = bool(torch.isfinite(norm))
        lr = self.state.lr
        if not finite:
            self._undo_and_halve()
            return None
        self.state.failures = 0
        self.guard.save(lr.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr.value()
        self.optimizer.step()
        lr.step += 1
        if self.average is not None:
            self.average.update(lr.step)
        return loss.item() * len(batch)

    def _undo_and_halve(self) -> None:
        """Non-finite values mean the last step went too far: undo it and halve the rate."""
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.state.lr
        lr.step = self.guard.restore()
        lr.nan_scale *= 0.5
        self.state.failures += 1
        if self.state.failures >= MAX_FAILURES:
            raise Diverged(
                f"epoch {self.state.epoch + 1}: the loss was non-finite {self.state.failures} times in a row, even "
                f"after halving the learning rate each time (now {lr.value():.3g}); check the data or lower "
                "training.lr",
                None,
            )

    def train_epoch(self, amp: Any) -> float:
        """One pass over the training rows; their mean NLL (over the steps that were kept)."""
        self.flow.train()
        total, count, rows = 0.0, 0, 0
        epoch, steps, on_step = self.state.epoch + 1, self.steps_per_epoch, self.reporter.step
        on_step(epoch, 0, steps, 0)
        for index, batch in enumerate(self.dist.lockstep(self.data.epoch(self.generator)), 1):
            summed = self.step(batch, amp)
            if summed is not None:
                total += summed
                count += len(batch)
            rows += len(batch) * self.dist.world  # an estimate across ranks: shards differ by a row at most
            on_step(epoch, index, steps, rows)
        all_total, all_count = self.dist.sum(total, count)
        return all_total / all_count if all_count else math.inf

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Summed NLL and row count of the validation rows of every rank (sums all-reduced)."""
        self.flow.eval()
        total, count = 0.0, 0
        for batch in self.data.validation(VAL_BATCH):
            total += -self.flow.log_prob(batch).double().sum().item()
            count += len(batch)
        all_total, all_count = self.dist.sum(total, count)
        return all_total, all_count

    def run_epoch(self, amp: Any, started: float, seconds_before: float) -> EpochReport:
        """Train one epoch, validate, keep the best weights; the state captured at its end is ``saved``."""
        t0 = time.perf_counter()
        epoch, state = self.state.epoch + 1, self.state
        train_nll = self.train_epoch(amp)
        with self.average.swapped() if self.average is not None else contextlib.nullcontext():
            # Validated, and kept as the best model, with the averaged weights when averaging is on.
            val_total, val_count = self.validate()
            val_nll = val_total / val_count if val_count else train_nll
            if val_nll < state.best_val:
                state.best_val, state.best_epoch = val_nll, epoch
                self.best_weights = copy.deepcopy(self.flow.state_dict())
        state.lr.end_epoch(val_nll)
        report = EpochReport(
            epoch,
            self.config.training.epochs,
            train_nll,
            val_nll,
            state.best_val,
            time.perf_counter() - t0,
            state.lr.value(),
        )
        state.epoch, state.seconds = epoch, seconds_before + time.perf_counter() - started
        state.history.append(report.to_dict())
        # One assignment, so an interrupt sees either the previous epoch's state or this one's.
        self.saved = self._capture()
        return report

    def _capture(self) -> TrainState:
        """A copy of the state with the tensors that resuming needs, taken at the end of an epoch."""
        return dataclasses.replace(
            self.state,
            lr=dataclasses.replace(self.state.lr),
            history=list(self.state.history),
            weights={k: v.detach().clone() for k, v in self.flow.state_dict().items()},
            optimizer=_clone_optimizer_state(self.optimizer),
            average=[a.detach().clone() for a in self.average.average] if self.average is not None else [],
            torch_rng=torch.get_rng_state(),
            shuffle_rng=self.generator.get_state(),
        )

    def run(self, metrics_file: IO[str] | None = None, on_epoch: Callable[[EpochReport], None] | None = None) -> Model:
        """Train until the planned epochs or early stopping; the model with the best validation weights."""
        tc = self.config.training
        started, seconds_before = time.perf_counter(), self.state.seconds
        # A resumed run that had already met its early stopping (it was stopped while its held-out rows were
        # scored) trains no further: it ends as it would have, scoring them in full.
        early = self.state.epoch > 0 and self.state.epoch - self.state.best_epoch >= tc.patience
        stopped = "early_stopping" if early else "completed"
        try:
            with mixed_precision(self.flow, tc.amp, self.dist.device) as amp:
                while self.state.epoch < tc.epochs and not early:
                    report = self.run_epoch(amp, started, seconds_before)
                    if metrics_file is not None:
                        metrics_file.write(json.dumps(report.to_dict()) + "\n")
                        metrics_file.flush()
                    if on_epoch is not None:
                        on_epoch(report)
                    if report.epoch - self.state.best_epoch >= tc.patience:
                        stopped = "early_stopping"
                        break
        except Diverged as exc:
            raise Diverged(str(exc), self.result("diverged")) from None
        except BaseException as exc:  # Ctrl-C, also when it came out wrapped (errors.raised_by_interrupt)
            if not raised_by_interrupt(exc):
                raise
            raise Interrupted(self.result("interrupted")) from None
        try:
            model = self.result(stopped)
        except BaseException as exc:  # Ctrl-C while scoring after the last epoch: the best model is there, keep it
            if not raised_by_interrupt(exc):
                raise
            raise Interrupted(self.result("interrupted")) from None
        if model is None:
            raise TrainingError("training never reached a finite validation loss; check the data or lower training.lr")
        return model

    @torch.no_grad()
    def _gain_over_gaussian(self) -> tuple[float, float]:
        """Mean and standard error, over the validation rows of every rank, of log p(row) under the current
        weights minus log p(row) under the Gaussian start (``Flow.gaussian_log_prob``)."""
        self.flow.eval()
        sums = [0.0, 0.0, 0.0]  # gain, gain squared, rows
        for batch in self.data.validation(VAL_BATCH):
            gain = (self.flow.log_prob(batch) - self.flow.gaussian_log_prob(batch)).double()
            sums = [sums[0] + float(gain.sum()), sums[1] + float((gain * gain).sum()), sums[2] + len(gain)]
        total, squares, count = self.dist.sum(*sums)
        if not count:
            return math.nan, math.nan
        mean = total / count
        return mean, math.sqrt(max(squares / count - mean * mean, 0.0) / max(count - 1, 1))

    def _kept(self, saved: TrainState, stopped: str) -> tuple[int, float, tuple[float, float] | None]:
        """(epoch, validation NLL, gain over the Gaussian) of the weights a finished run keeps: its best
        epoch if that beats the Gaussian on the validation rows significantly (``health.gain_threshold``),
        else the untrained start (epoch 0: that Gaussian itself when the base is normal) unless the best
        epoch is still better than the start (a start that is not the Gaussian: another base).

        Early stopping picks the best of many noisy validation scores, which flatters the winner most where
        the validation rows are few: on 60 rows (6 held out) the default kept an epoch better than the
        Gaussian on those rows and 0.27 nats/row worse on new rows. The start does not take part in early
        stopping itself: a flow may have to get worse before it gets better (a bimodal column), and
        patience counts from its own best epoch."""
        if stopped not in ("completed", "early_stopping") or not self.n_val:
            return saved.best_epoch, saved.best_val, None
        gain = self._gain_over_gaussian()
        significant = gain[0] > gain_threshold(self.n_val) * gain[1]
        # A start that is not the Gaussian (another base) is no better harbour than a best epoch that beats it.
        start_not_gaussian = self.start_nll > self.gaussian_nll + WORSE_TOLERANCE
        if significant or (start_not_gaussian and saved.best_val < self.start_nll):
            return saved.best_epoch, saved.best_val, gain
        self.flow.load_state_dict(self.start_weights)
        return 0, self.start_nll, gain

    def result(self, stopped: str) -> Model | None:
        """The best model so far with the state at the end of the last completed epoch (None if no
        epoch ended, or if no step ever succeeded: an untrained model is not worth saving)."""
        saved = self.saved
        if saved is None or saved.lr.step == 0 or not math.isfinite(saved.best_val):
            return None
        self.reporter.phase("scoring the held-out rows for the anomaly quantiles")
        self.flow.load_state_dict(self.best_weights)
        best_epoch, best_val, gain = self._kept(saved, stopped)
        info = {
            "epochs_run": len(saved.history),
            "best_epoch": best_epoch,
            "best_val_nll": best_val,
            "fit_seconds": round(saved.seconds, 3),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "world_size": self.dist.world,
            "seed": self.seed,
            "device": str(self.dist.device),
            "stopped": stopped,
            "weight_decay": self.weight_decay,
            "lr": saved.lr.base,  # the base rate the run used (training.lr: auto resolved; kept on --resume)
            "gaussian_val_nll": self.gaussian_nll if math.isfinite(self.gaussian_nll) else None,
            "gain_over_gaussian": None if gain is None else [round(gain[0], 6), round(gain[1], 6)],
            "gain_significant": None if gain is None else bool(gain[0] > gain_threshold(self.n_val) * gain[1]),
            # The discrete part's own fit (``_fit_discrete``): validation NLL of the training frequencies'
            # product and of the network kept, epochs run; None without discrete features.
            "discrete_fit": self.discrete_fit,
            # The conditional questions' network (``_fit_conditional``): the same figures, in standardized units.
            "conditional_fit": self.conditional_fit,
            "metrics": saved.history,
        }
        info["warnings"] = fit_warnings(info, self.data.schema.dim)
        model = Model(self.data.schema, self.config, self.flow.to(torch.float64), info)
        model.train_state = saved
        info["logprob_quantiles"] = self._quantiles(model, complete=stopped != "interrupted")
        self.reporter.phase_done("")
        return model

    def _quantiles(self, model: Model, complete: bool = True) -> dict[str, Any]:
        """The logprob quantiles of the held-out rows, overall and per pattern of absent cells; patterns too
        rare among them are calibrated on rows the model samples (``quantiles.py``). Not ``complete`` (a
        stopped run): of the first ``STOPPED_QUANTILE_ROWS`` held-out rows only, nothing sampled."""
        schema = model.schema
        reference, source = reference_rows(self.data, **({} if complete else {"limit": STOPPED_QUANTILE_ROWS}))
        features = reference.double().cpu().numpy()
        scores = self._scored(model, features, f"{source} rows")
        if not complete:
            absent = schema.absent_cells(features) if schema.pattern_columns else None
            return logprob_quantiles(scores, source, absent, schema.pattern_columns)
        if not schema.pattern_columns:
            if np.isfinite(scores).sum() >= MIN_PATTERN_ROWS:
                return logprob_quantiles(scores, source)
            # A table of a few dozen rows holds out a handful (2 of 20): their quantiles would rank nearly
            # every row at 100. The model's own rows give the scale instead, as for rare patterns below; 2,000
            # reach the finest stored level (0.05%), and cost little even where sampling is slow (UMNN inverts
            # by bisection: 20,000 rows took two minutes on a 400-row table).
            drawn = self._calibration_rows(model, SMALL_TABLE_CALIBRATION_SAMPLES)
            return logprob_quantiles(self._scored(model, drawn, "sampled rows"), "sampled")
        drawn = self._calibration_rows(model, CALIBRATION_SAMPLES)
        sampled = (self._scored(model, drawn, "sampled rows"), schema.absent_cells(drawn))
        return logprob_quantiles(scores, source, schema.absent_cells(features), schema.pattern_columns, sampled)

    def _scored(self, model: Model, features: np.ndarray, what: str) -> np.ndarray:
        """``model.log_prob_features`` in parts, with a progress line (a UMNN scores slowly, and this phase
        comes after the last epoch's line: a minute without output looked like a hang)."""
        parts = []
        for start in range(0, len(features), PROGRESS_ROWS):
            self.reporter.status(f"scoring {what}: {start:,} of {len(features):,}")
            parts.append(model.log_prob_features(features[start : start + PROGRESS_ROWS]))
        return np.concatenate(parts) if parts else np.zeros(0)

    def _calibration_rows(self, model: Model, count: int) -> np.ndarray:
        """``count`` rows the model samples, as features: drawn (in parts, with a progress line), turned into
        the rows a user gets (rounded, absent cells empty) and encoded again, so they are scored as such."""
        schema = model.schema
        generator = torch.Generator(device=model.device).manual_seed(self.seed)
        parts = []
        for start in range(0, count, PROGRESS_ROWS):
            self.reporter.status(f"sampling rows for the rare patterns of absent cells: {start:,} of {count:,}")
            parts.append(model.draw_rows(min(PROGRESS_ROWS, count - start), generator))
        drawn = np.concatenate(parts)
        return schema.to_features(schema.to_frame(drawn), on_invalid="neg-inf")[0]
