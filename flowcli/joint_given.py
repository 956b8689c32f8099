"""Rows drawn given discrete values, from the joint model itself.

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
from the joint flow, usually the better-trained of the two models. The conditional-questions network
(``conditional.py``) still answers any question with a given number, and this one when enumerating would
take more than ``MAX_COMBINATIONS`` combinations.

Missing values are missing at random, as everywhere in conditional questions: the rows drawn are complete.
"Missing" is never a drawn state: the enumeration leaves it out, and the heads drawn after the last given
feature are renormalized without it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .conditional import Layout

MAX_COMBINATIONS = 1 << 16  # combinations of unknown codes enumerated for one given row
MAX_ENUMERATED = 1 << 22  # combinations enumerated in one call, over all distinct given rows
ENUMERATION_BATCH = 1 << 14


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
    (n,) bool of the rows answered: a row whose enumeration would exceed the limits is left out (its
    feature row is NaN) for the conditional network."""
    flow = model.flow
    layout: Layout = flow.conditional.layout
    n = len(x)
    out = np.full((n, x.shape[1]), np.nan)
    answered = np.ones(n, dtype=bool)
    if n == 0:
        return out, answered
    discrete = layout.discrete
    codes = None
    if discrete:
        known = observed[:, [layout.column_of[i] for i in discrete]]
        given = np.where(known, np.floor(x[:, discrete]), -1).astype(np.int64)
        codes, answered = _draw_codes(flow, layout, torch.as_tensor(given, device=model.device), generator)
    with torch.inference_mode():
        features, _ = flow.inverse_given_codes(flow.base.sample(n, generator), codes)
    features = features.double().cpu().numpy()
    out[answered] = features[answered]
    return out, answered


@torch.inference_mode()
def _draw_codes(flow: Any, layout: Layout, given: Tensor, generator: torch.Generator) -> tuple[Tensor, np.ndarray]:
    """(n, D) codes: ``given`` where >= 0, the others drawn from P(d_rest | d_given, nothing missing)."""
    model = flow.discrete
    levels = model.levels
    missing = [layout.missing_code[i] for i in layout.discrete]
    n, features = given.shape
    codes = given.clamp_min(0).clone()
    answered = torch.ones(n, dtype=torch.bool, device=given.device)
    known = given >= 0
    positions = torch.arange(features, device=given.device).expand(n, features)
    last = torch.where(known, positions, -1).max(1).values
    keys, inverse = torch.unique(given, dim=0, return_inverse=True)
    groups = torch.argsort(inverse, stable=True).split(torch.bincount(inverse, minlength=len(keys)).tolist())
    budget = MAX_ENUMERATED
    for key, rows in zip(keys, groups, strict=True):
        top = int(last[rows[0]])
        unknown = [i for i in range(top) if key[i] < 0]
        choices = [[c for c in range(levels[i]) if c != missing[i]] for i in unknown]
        size = math.prod(len(c) for c in choices)
        if size > MAX_COMBINATIONS or size > budget:
            answered[rows] = False
            continue
        budget -= size
        if not unknown:
            continue
        candidates = key.clamp_min(0).repeat(size, 1)
        grid = torch.cartesian_prod(*[torch.tensor(c, device=given.device) for c in choices])
        candidates[:, unknown] = grid.reshape(size, len(unknown))
        log_p = torch.cat([_log_prob_up_to(model, part, top) for part in candidates.split(ENUMERATION_BATCH)])
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


def _log_prob_up_to(model: Any, codes: Tensor, top: int) -> Tensor:
    """log prod_{i <= top} P(codes_i | codes_<i): the probability of the features up to ``top``."""
    logits = model.logits(model.one_hot(codes))
    bounds = model.offsets.tolist()
    out = codes.new_zeros(len(codes), dtype=logits.dtype)
    for i in range(top + 1):
        head = torch.log_softmax(logits[:, bounds[i] : bounds[i + 1]], 1)
        out = out + head.gather(1, codes[:, i : i + 1])[:, 0]
    return out
