"""Questions about discrete values answered by the joint model itself: rows drawn given labels, and the exact
probability of a row's labels with the others summed out.

When every given cell of a row is discrete (a category, or a numeric column's atom), the joint model
(``model.Flow``: P(d) p(c | d)) answers p(others | given) exactly, with no second network:

1. the other discrete features from P(d_rest | d_given), by the discrete part's own probabilities: the
   unknown features that come *before* the last given one in its autoregressive order are enumerated
   (every combination of their codes, weighted by the product of the heads up to that last given feature;
   at most ``MAX_COMBINATIONS`` of them), and the ones after it are drawn head by head, as in sampling;
2. the continuous features from the flow given the whole discrete part, p(c | d), by inverting a base draw
   with d as context, exactly as ``flowcli sample`` does.

So a combination of categories the discrete part learnt never to occur (a species on an island where it
never lives) is as rare given one of them as in the joint samples, and the numbers given a category come
from the joint flow, the model plain ``flowcli sample`` draws from (as good as its conditioning on the
labels: a short fit may have learnt it less well than the network). The conditional-questions network
(``conditional.py``) still answers any question with a given number, and this one when enumerating would
take more than ``MAX_COMBINATIONS`` combinations.

Scoring is exact the same way (``log_marginal``): the probability of a row's known labels sums the unknown
labels before the last known one out by enumeration, and the ones after it sum to 1 by construction.
``logprob --target`` of labels given labels is a ratio of two such sums, the targets' probability among the
values they can hold ("missing" is not one of them, as for the network), so it sums to 1 over those values.

Missing values are missing at random, as everywhere in conditional questions: the rows drawn are complete.
"Missing" is never a drawn state: the enumeration leaves it out, and the heads drawn after the last given
feature are renormalized without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .conditional import Layout

# Combinations of unknown codes enumerated for one distinct given row. Per row, not per call, so that which
# model answers a row never depends on the other rows of its batch; a file of many distinct label rows that
# each need this many costs one pass of the discrete part per combination.
MAX_COMBINATIONS = 1 << 14
ENUMERATION_BATCH = 1 << 14
UNKNOWN, PRESENT = -1, -2  # codes of a feature summed over: all its codes, or all but "missing"


def answerable_rows(model: Any, x: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """(n,) bool: the row's observed cells are all discrete (no observed continuous value), so that the
    joint model answers it here. ``x``: feature rows (data units; NaN where a numeric cell is on an atom),
    ``observed``: (n, columns)."""
    layout: Layout = model.flow.conditional.layout
    continuous = layout.continuous
    if not continuous:
        return np.ones(len(x), dtype=bool)
    columns = [layout.column_of[i] for i in continuous]
    return ~(observed[:, columns] & ~np.isnan(x[:, continuous])).any(1)


def draw(model: Any, x: np.ndarray, observed: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows drawn given the observed discrete cells of ``x`` (rows of ``answerable_rows``), and a
    (n,) bool of the rows answered: a row whose enumeration would exceed the limits is not (its feature
    row means nothing), and goes to the conditional network."""
    flow = model.flow
    n = len(x)
    codes, answered = None, np.ones(n, dtype=bool)
    if flow.conditional.layout.discrete and n:
        given = _known_codes(model, x, observed, present=None)
        codes, answered = _draw_codes(flow, flow.conditional.layout, given, generator)
    with torch.inference_mode():
        features, _ = flow.inverse_given_codes(flow.base.sample(n, generator), codes)
    return features.double().cpu().numpy(), answered


def _known_codes(model: Any, x: np.ndarray, fixed: np.ndarray, present: np.ndarray | None) -> Tensor:
    """(n, discrete features) on the model's device: the code in ``x`` of each feature of a ``fixed`` cell
    (n, columns), ``PRESENT`` for one of a ``present`` cell that has a missing code, else ``UNKNOWN``."""
    layout: Layout = model.flow.conditional.layout
    discrete = layout.discrete
    columns = [layout.column_of[i] for i in discrete]
    codes = np.where(fixed[:, columns], np.floor(x[:, discrete]), UNKNOWN)
    if present is not None:  # "not missing" constrains only a feature that has a missing code
        has_missing = np.array([layout.missing_code[i] >= 0 for i in discrete])
        codes = np.where(present[:, columns] & has_missing, PRESENT, codes)
    return torch.as_tensor(codes.astype(np.int64), device=model.device)


@torch.inference_mode()
def _draw_codes(flow: Any, layout: Layout, given: Tensor, generator: torch.Generator) -> tuple[Tensor, np.ndarray]:
    """(n, D) codes: ``given`` where >= 0, the others drawn: the unknown features before a row's last given
    one jointly, from P(them | the given ones, none of them missing), by enumeration; each feature after it
    from its head renormalized without "missing" (missing at random: the state is not drawn)."""
    model = flow.discrete
    levels = model.levels
    missing = [layout.missing_code[i] for i in layout.discrete]
    n, features = given.shape
    codes = given.clamp_min(0).clone()
    answered = torch.ones(n, dtype=torch.bool, device=given.device)
    known = given >= 0
    positions = torch.arange(features, device=given.device).expand(n, features)
    last = torch.where(known, positions, -1).max(1).values
    for key, rows in _distinct(given):
        top = int(last[rows[0]])
        unknown = [i for i in range(top) if key[i] < 0]
        if not unknown:
            continue
        candidates = _candidates(key, unknown, [[c for c in range(levels[i]) if c != missing[i]] for i in unknown])
        if candidates is None:
            answered[rows] = False
            continue
        log_p = _log_prob_up_to(model, candidates, top)
        pick = torch.multinomial(torch.softmax(log_p, 0), len(rows), replacement=True, generator=generator)
        codes[rows] = candidates[pick]
    # Every feature after a row's last given one, head by head, without the "missing" code.
    for i in range(features):
        chosen = positions[:, i] > last
        if not chosen.any():
            continue
        bounds = model.offsets[i : i + 2].tolist()
        logits = model.logits(model.one_hot(codes))[:, bounds[0] : bounds[1]]
        if missing[i] >= 0:
            logits[:, missing[i]] = -math.inf
        drawn = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator)[:, 0]
        codes[:, i] = torch.where(chosen, drawn, codes[:, i])
    return codes, answered.cpu().numpy()


@torch.inference_mode()
def log_marginal(
    model: Any, x: np.ndarray, fixed: np.ndarray, present: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """log of the probability, per row, that the discrete features of the ``fixed`` cells (n, columns) hold
    their codes in ``x`` and those of the ``present`` cells hold any code but "missing", every other
    discrete feature summed out (missing included). The unknown features before a row's last fixed or
    present one are enumerated (at most ``MAX_COMBINATIONS`` combinations; more: not answered, NaN); the
    features after it sum to 1 by construction. Also returns the (n,) bool of the rows answered."""
    flow = model.flow
    layout: Layout = flow.conditional.layout
    n = len(x)
    if not layout.discrete or n == 0:
        return np.zeros(n), np.ones(n, dtype=bool)  # nothing known: probability 1
    given = _known_codes(model, x, fixed, present)
    dm = flow.discrete
    missing = [layout.missing_code[i] for i in layout.discrete]
    features = given.shape[1]
    positions = torch.arange(features, device=given.device).expand(n, features)
    last = torch.where(given != UNKNOWN, positions, -1).max(1).values
    # Rows with nothing to sum out up to their last constrained feature: the product of their heads, at once.
    direct = ~((given < 0) & (positions <= last[:, None])).any(1)
    heads = _head_log_probs(dm, given.clamp_min(0))
    result = torch.where(positions <= last[:, None], heads, 0.0).sum(1).double()
    done = torch.ones(n, dtype=torch.bool, device=given.device)
    enumerated = torch.nonzero(~direct)[:, 0]
    for key, rows in _distinct(given[enumerated]) if len(enumerated) else ():
        rows = enumerated[rows]
        top = int(last[rows[0]])
        summed = [i for i in range(top + 1) if key[i] < 0]
        choices = [[c for c in range(dm.levels[i]) if key[i] == UNKNOWN or c != missing[i]] for i in summed]
        candidates = _candidates(key, summed, choices)
        if candidates is None:
            done[rows] = False
            continue
        result[rows] = float(torch.logsumexp(_log_prob_up_to(dm, candidates, top).double(), 0))
    answered = done.cpu().numpy()
    return np.where(answered, result.cpu().numpy(), np.nan), answered


def _distinct(given: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """(a distinct row of ``given``, the indices of the rows equal to it), in a fixed order."""
    keys, inverse = torch.unique(given, dim=0, return_inverse=True)
    groups = torch.argsort(inverse, stable=True).split(torch.bincount(inverse, minlength=len(keys)).tolist())
    yield from zip(keys, groups, strict=True)


def _candidates(key: Tensor, unknown: list[int], choices: list[list[int]]) -> Tensor | None:
    """Copies of ``key`` (negative: unknown, read as 0) with the ``unknown`` features set to every combination
    of their ``choices``; None when there would be more than ``MAX_COMBINATIONS``."""
    size = math.prod(len(c) for c in choices)
    if size > MAX_COMBINATIONS:
        return None
    candidates = key.clamp_min(0).repeat(size, 1)
    if unknown:
        grid = torch.cartesian_prod(*[torch.tensor(c, device=key.device) for c in choices])
        candidates[:, unknown] = grid.reshape(size, len(unknown))
    return candidates


def _head_log_probs(model: Any, codes: Tensor) -> Tensor:
    """(n, D): log P(codes_i | codes_<i) for every feature i, in batches."""
    bounds = model.offsets.tolist()
    parts = []
    for part in codes.split(ENUMERATION_BATCH):
        logits = model.logits(model.one_hot(part))
        heads = [torch.log_softmax(logits[:, a:b], 1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        parts.append(torch.stack([h.gather(1, part[:, i : i + 1])[:, 0] for i, h in enumerate(heads)], 1))
    return torch.cat(parts)


def _log_prob_up_to(model: Any, codes: Tensor, top: int) -> Tensor:
    """log prod_{i <= top} P(codes_i | codes_<i): the probability of the features up to ``top``."""
    return _head_log_probs(model, codes)[:, : top + 1].sum(1)
