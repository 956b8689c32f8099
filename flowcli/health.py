"""Is a fitted model any good? The checks after every fit, so that a failed fit is never silent.

A flow starts as the maximum-likelihood full-covariance Gaussian of its preprocessed training rows
(``layers.linear.Whiten``) and should only get better. After training the trainer scores that Gaussian
on the validation rows (``Flow.gaussian_log_prob``: same rows, same features, same preprocessing
log|det|, so the two numbers are comparable nats/row), and ``fit_warnings`` compares the run with it.
Each warning is one line that says what happened and what to try:

- **diverged**: after its best epoch the validation NLL rose by more than ``1 + 0.5 * dim`` nats/row, or
  became non-finite. Overfitting past the best epoch moves it by hundredths to tenths of a nat; a
  run going unstable (the measured 23.8 -> 1103 -> 33928 on a table with a dozen broken rows) by far more.
- **best epoch early**: the weights kept are from one of the first epochs (epoch 1 or 2, or in the first
  10% of the run) of a run of 10 or more epochs, while the training NLL kept improving after it by more than
  0.1 nats/row: what training learnt did not carry over to held-out rows.
- **no better than a Gaussian**: the model kept is the Gaussian start (epoch 0), because no epoch beat it
  on the validation rows or the best one's gain was not significant (``gain_threshold``,
  ``Trainer._kept``); or the model is worse than the Gaussian by more than 0.001 nats/row (possible
  without validation rows, or with a base that does not start as a Gaussian: studentt, mixture,
  uniform); or, with such a base, the model kept is not significantly better than the Gaussian.

The warnings are stored in the checkpoint (``info.warnings``, with ``info.gaussian_val_nll``); ``fit``
prints them on stderr and ``fit --strict`` fails on them.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

WORSE_TOLERANCE = 1e-3  # nats/row by which the model may trail the Gaussian before it is called worse
GAIN_LEVEL = 0.05  # the two-sided level of the test of the kept epoch's gain over the start
IMPROVING = 0.1  # nats/row the training NLL must fall after the kept epoch to count as "kept improving"


def gain_threshold(n_val: int) -> float:
    """How many standard errors the kept epoch's mean per-row gain over the Gaussian start on ``n_val``
    validation rows must reach: Student's t quantile at 1 - GAIN_LEVEL / 2 with n_val - 1 degrees of
    freedom (t, not normal: with few rows the standard error is itself a noisy estimate, and that is
    where picking the best of many noisy epochs flatters the winner most). 1.98 on 100 rows, 2.57 on 6,
    infinite (the start is kept) below 4. Measured on a 60-row normal table (6 validation rows), 6 seeds x
    default and maf: two standard errors let an epoch 0.07 nats/row worse than the Gaussian on new rows
    through; t kept the start every time, while on 4,000-row collinear and bimodal tables the real gains
    (0.2 and 1.2 nats/row) cleared it by 5 to 30 standard errors. Correcting for the number of epochs
    (Bonferroni) as well lost a real 0.24 nats/row on a 1,000-row table. The t quantile comes from the
    normal one by the Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5), within 1% from 5 degrees of
    freedom up."""
    dof = n_val - 1
    if dof < 3:
        return math.inf
    z = NormalDist().inv_cdf(1 - GAIN_LEVEL / 2)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3


def diverged_rise(dim: int) -> float:
    """How far (nats/row) the validation NLL may rise after its best before the run counts as diverged."""
    return 1.0 + 0.5 * dim


def fit_warnings(info: dict[str, Any], dim: int) -> list[str]:
    """The warnings of a finished fit, from its ``info`` (metrics history, best epoch and validation NLL,
    the Gaussian's validation NLL, the kept weights' gain over it) and the number of latent dimensions."""
    history = info.get("metrics") or []
    best_epoch, best = int(info["best_epoch"]), float(info["best_val_nll"])
    warnings = [w for w in (_diverged(history, best_epoch, best, dim), _early(history, best_epoch)) if w]
    gaussian = info.get("gaussian_val_nll")
    if gaussian is not None and math.isfinite(gaussian):
        warning = _no_gain(best_epoch, best, gaussian, info.get("gain_over_gaussian"), info.get("gain_significant"))
        warnings += [warning] if warning else []
    return warnings


def _no_gain(
    best_epoch: int, best: float, gaussian: float, gain: list[float] | None, significant: bool | None
) -> str | None:
    shown = f"{gain[0]:.3g} +- {gain[1]:.2g} nats/row" if gain else ""
    if best > gaussian + WORSE_TOLERANCE:
        what = " (the untrained start: this config's base does not start as a Gaussian)" if best_epoch == 0 else ""
        return (
            f"the model{what} is worse than a single full-covariance Gaussian on the validation rows ({best:.4f} "
            f"against {gaussian:.4f} nats/row). Try -c default, more epochs, or a lower training.lr"
        )
    if best_epoch == 0:
        why = f"the best epoch's gain over it, {shown}, is not significant" if gain else "no epoch beat it"
        return (
            f"the model kept is the start, a single full-covariance Gaussian (validation NLL {gaussian:.4f} "
            f"nats/row): {why}. The flow added nothing: the data may be that simple (or, with few rows, that "
            "may be all they support); else try more epochs or a lower training.lr"
        )
    if significant is False:
        return (
            f"the model is not significantly better than a single full-covariance Gaussian on the validation "
            f"rows (gain {shown}); it may do worse on new rows. Try -c default (which starts as that Gaussian and "
            "keeps it unless training beats it)"
        )
    return None


def _diverged(history: list[dict[str, Any]], best_epoch: int, best: float, dim: int) -> str | None:
    after = [m for m in history if m["epoch"] > best_epoch]
    if not after:
        return None
    worst = max(after, key=lambda m: m["val_nll"] if math.isfinite(m["val_nll"]) else math.inf)
    if math.isfinite(worst["val_nll"]) and worst["val_nll"] - best <= diverged_rise(dim):
        return None
    return (
        f"training diverged: the validation NLL rose from {best:.4g} (epoch {best_epoch}, the weights "
        f"kept) to {worst['val_nll']:.4g} (epoch {worst['epoch']}). Try a lower training.lr, check the data "
        "for broken rows (zeros standing for missing values, wrong units), or, with a config of your own, -c default"
    )


def _early(history: list[dict[str, Any]], best_epoch: int) -> str | None:
    runs = len(history)
    if runs < 10 or not 1 <= best_epoch <= max(2, runs // 10):  # epoch 0, the start, has a warning of its own
        return None
    start = history[best_epoch - 1]["train_nll"]
    end = history[-1]["train_nll"]
    if not (math.isfinite(start) and math.isfinite(end)) or start - end <= IMPROVING:
        return None
    return (
        f"the weights kept are from epoch {best_epoch} of {runs}, while the training NLL kept improving "
        f"({start:.4g} -> {end:.4g}): what training learnt did not hold on held-out rows. Try more rows, a "
        "smaller model (hidden), training.weight_decay, or a lower training.lr"
    )
