"""Conditional questions on one model: p(targets | observed) for any two disjoint sets of a row's columns.

The joint flow (``model.Flow``) answers joint questions; a conditional of a flow for an arbitrary subset of
columns has no closed form (it would need the flow's marginals). So every model also holds an
*arbitrary-conditioning* network, trained after the joint flow on the same rows with random choices of
observed and target columns, in the spirit of ACFlow (Li, Akbar & Oliva 2020) and ACE (Strauss & Oliva
2021): its inputs are the observed values and the masks of which columns are observed and which are
targets, and its output is the density of the targets, autoregressively,

    p(x_t | x_o) = prod_{i in t, in order} p(x_i | x_o, x_{t, before i}),

each factor a softmax over a discrete feature's codes (a category; the state of a numeric column: a value
or one of its atoms) or a mixture of ``COMPONENTS`` Gaussians for a continuous feature in the joint flow's
standardized space (``schema.Preprocess``), whose log|det| puts the density back in the user's units.
One network (a MADE, Germain et al. 2015, over the features with discrete ones first, the masks and
observed values as an unmasked context; as MADE-MoG in Papamakarios et al. 2017) gives the exact
normalized conditional for every pair (o, t), the joint-of-a-subset (o empty) as a special case, so:

- ``sample --given``: o = the given columns, t = the others, drawn feature by feature (exactly N rows,
  whatever the probability of the condition: no rejection); a row whose given cells are all discrete is
  answered by the joint model itself instead (``joint_given.py``);
- ``logprob --target``: o = the row's other present columns, t = the targets; a file lacking columns:
  o empty, t = the columns present (the rest marginalised out: they are simply not targets);
- ``impute``: o = the observed cells, t = each missing cell on its own for its conditional mean or most
  probable label (one factor, exact), or all missing cells jointly for multiple imputation.

Missing values are missing at random here: a training cell that is missing is neither observed nor a
target (its row still teaches the others), and the network never proposes "missing" (that code is
excluded), so conditional samples and imputations are complete rows. The joint flow keeps modelling
missingness as data (``flowcli sample`` reproduces the data's missing cells).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .layers.nets import MaskedLinear

if TYPE_CHECKING:
    from .columns import Column
    from .schema import Preprocess, Schema

COMPONENTS = 8  # Gaussians per continuous feature
LOG_SCALE_RANGE = (-7.0, 1.5)  # a component's log standard deviation, in standardized units (sd <= 4.5)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def hidden_width(features: int, width: int) -> int:
    """The hidden width: grows with the input, within [128, 512]."""
    return max(128, min(512, 4 * (width + features)))


@dataclass(frozen=True)
class Layout:
    """Where each feature of the table lives in the network, per feature: ``levels`` (its number of codes;
    0: continuous), ``missing_code`` (its code meaning "missing"; -1: none), ``column_of`` (the index of its
    column among ``feature_columns(schema)``) and ``state_of`` (for a numeric column's value feature, the
    feature index of the column's state; -1 otherwise)."""

    levels: tuple[int, ...]
    missing_code: tuple[int, ...]
    column_of: tuple[int, ...]
    state_of: tuple[int, ...]

    @property
    def discrete(self) -> list[int]:
        return [i for i, k in enumerate(self.levels) if k > 0]

    @property
    def continuous(self) -> list[int]:
        return [i for i, k in enumerate(self.levels) if k == 0]

    @property
    def columns(self) -> int:
        return max(self.column_of, default=-1) + 1


def feature_columns(schema: Schema) -> list[Column]:
    """The columns that have features, in order: the columns conditional questions are about."""
    return [c for c in schema.columns if c.rules.reads_values and c.width]


def layout_of(schema: Schema) -> Layout:
    levels: list[int] = []
    missing: list[int] = []
    column_of: list[int] = []
    state_of: list[int] = []
    for index, col in enumerate(feature_columns(schema)):
        first = len(levels)
        for spec in col.feature_specs():
            levels.append(spec.levels)
            column_of.append(index)
            if spec.levels == 0:
                missing.append(-1)
                state_of.append(first if col.has_state else -1)
            else:  # a numeric column's state (code 1: missing) or a categorical column (last level: missing)
                missing.append((1 if col.has_state else col.levels - 1) if col.missing else -1)
                state_of.append(-1)
    return Layout(tuple(levels), tuple(missing), tuple(column_of), tuple(state_of))


class ConditionalNet(nn.Module):
    """The arbitrary-conditioning network over a table's features (see the module docstring).

    Variables in network order: the discrete features (feature order), then the continuous ones. Inputs
    (masked, MADE-style): the one-hot codes of the discrete features and the standardized values of the
    present continuous ones that are observed or targets, zero elsewhere; the context (seen by every
    output): the same encoding of the observed features only, and one observed and one target flag per
    feature. Outputs: each discrete feature's logits, then per continuous feature its mixture's
    ``COMPONENTS`` logits, means and log scales (parameter-major).
    """

    offsets: Tensor  # where each discrete feature's block starts in the one-hot part (buffer)
    y_low: Tensor  # per continuous feature: the smallest and largest standardized training value (buffers,
    y_high: Tensor  # saved: ``fit_conditional`` sets them; draws are kept inside, see ``draw_values``)

    def __init__(self, layout: Layout, hidden: Sequence[int] | None = None) -> None:
        super().__init__()
        self.layout = layout
        self.disc, self.cont = layout.discrete, layout.continuous
        levels = [layout.levels[i] for i in self.disc]
        self.n_disc, self.n_cont, self.features = len(self.disc), len(self.cont), len(layout.levels)
        self.one_hot_width = sum(levels)
        self.width = self.one_hot_width + self.n_cont
        self.register_buffer("offsets", torch.tensor([0, *torch.tensor(levels, dtype=torch.long).cumsum(0).tolist()]))
        self.register_buffer("y_low", torch.full((self.n_cont,), -math.inf))
        self.register_buffer("y_high", torch.full((self.n_cont,), math.inf))
        size = hidden_width(self.features, self.width)
        hidden = list(hidden) if hidden is not None else [size, size]
        # Degrees: discrete feature r has degree r + 1, continuous c degree n_disc + c + 1; hidden units
        # cycle through 0..features-1 (0: they see the context only, so the first variable's output does).
        degree_in = torch.cat(
            [torch.full((k,), r + 1) for r, k in enumerate(levels)] + [torch.arange(self.n_cont) + self.n_disc + 1]
        )
        degree_out = torch.cat(
            [torch.full((k,), r + 1) for r, k in enumerate(levels)]
            + [(torch.arange(self.n_cont) + self.n_disc + 1).repeat(3 * COMPONENTS)]
        )
        layers: list[nn.Module] = []
        degrees = degree_in
        for i, width in enumerate(hidden):
            degree_h = torch.arange(width) % max(self.features, 1)
            mask = degree_h[:, None] >= degrees[None, :]
            layers.append(MaskedLinear(mask.shape[1], mask.shape[0], mask))
            degrees = degree_h
            if i == 0:
                self.context_in = nn.Linear(self.width + 2 * self.features, width, bias=False)
        self.hidden = nn.ModuleList(layers)
        mask = degree_out[:, None] > degrees[None, :]
        self.head = MaskedLinear(mask.shape[1], mask.shape[0], mask)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():  # a start of spread components, so that they do not stay identical
            bias = self.head.bias
            bias.zero_()
            start = self.one_hot_width
            means = torch.linspace(-1.5, 1.5, COMPONENTS).repeat_interleave(self.n_cont)
            bias[start + COMPONENTS * self.n_cont : start + 2 * COMPONENTS * self.n_cont] = means
            bias[start + 2 * COMPONENTS * self.n_cont :] = math.log(0.7)

    # --- encoding -------------------------------------------------------------------------------------------

    def encode(self, codes: Tensor, y: Tensor, keep_disc: Tensor, keep_cont: Tensor) -> Tensor:
        """The network encoding (n, width) of codes (n, n_disc) and standardized values (n, n_cont), zero
        where ``keep_*`` (bool, per feature) is False."""
        parts = [
            nn.functional.one_hot(codes[:, r], self.layout.levels[i]).to(y.dtype) * keep_disc[:, r : r + 1]
            for r, i in enumerate(self.disc)
        ]
        parts.append(torch.where(keep_cont, y, 0.0))
        return torch.cat(parts, 1)

    def outputs(self, inputs: Tensor, context: Tensor) -> Tensor:
        h = inputs
        for i, layer in enumerate(self.hidden):
            h = layer(h) + (self.context_in(context) if i == 0 else 0.0)
            h = torch.relu(h)
        return self.head(h)

    def split_outputs(self, out: Tensor) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
        """Per discrete feature its log-probabilities (with the "missing" code excluded); the continuous
        features' mixture log-weights, means and log scales, each (n, n_cont, COMPONENTS)."""
        bounds = self.offsets.tolist()
        logps = []
        for r, i in enumerate(self.disc):
            logits = out[:, bounds[r] : bounds[r + 1]]
            missing = self.layout.missing_code[i]
            if missing >= 0:
                logits = logits.index_fill(1, torch.tensor([missing], device=out.device), -math.inf)
            logps.append(torch.log_softmax(logits, 1))
        start, c, m = self.one_hot_width, self.n_cont, COMPONENTS
        if not c:
            empty = out.new_zeros(len(out), 0, m)
            return logps, empty, empty, empty
        params = out[:, start:].reshape(-1, 3, m, c).permute(0, 1, 3, 2)  # (n, 3, n_cont, m)
        weights = torch.log_softmax(params[:, 0], -1)
        log_scale = params[:, 2].clamp(*LOG_SCALE_RANGE)
        return logps, weights, params[:, 1], log_scale


def mixture_log_prob(y: Tensor, weights: Tensor, means: Tensor, log_scale: Tensor) -> Tensor:
    """log of the Gaussian mixture density at y (n, c), per feature."""
    z = (y[..., None] - means) * torch.exp(-log_scale)
    return torch.logsumexp(weights - 0.5 * z * z - log_scale - HALF_LOG_2PI, -1)


REDRAWS = 8  # draws outside the training range are drawn again up to this many times, then clamped


def draw_values(
    net: ConditionalNet, c: int, weights: Tensor, means: Tensor, log_scale: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Draws (n,) of continuous feature ``c``'s mixtures (n, n_cont, m), kept inside the feature's training
    range (standardized): drawn again where outside, up to ``REDRAWS`` times, then clamped. The preprocessing's
    inverse grows exponentially in the soft tails and for positive columns, so one wide component's draw
    could otherwise come back as 1e11 for a column whose values end at 800 (and dominate an imputed mean);
    as SDV's synthesizers do, no value beyond what the training column shows is proposed."""
    args = weights[:, c : c + 1], means[:, c : c + 1], log_scale[:, c : c + 1]
    low, high = net.y_low[c], net.y_high[c]
    drawn = mixture_sample(*args, generator)[:, 0]
    for _ in range(REDRAWS):
        outside = (drawn < low) | (drawn > high)
        if not outside.any():
            break
        drawn = torch.where(outside, mixture_sample(*args, generator)[:, 0], drawn)
    return drawn.clamp(low, high)


def mixture_sample(weights: Tensor, means: Tensor, log_scale: Tensor, generator: torch.Generator | None) -> Tensor:
    """One draw per row and feature of the mixtures (n, c, m) -> (n, c)."""
    flat = weights.reshape(-1, weights.shape[-1]).exp()
    pick = torch.multinomial(flat, 1, generator=generator).reshape(weights.shape[:-1] + (1,))
    noise = torch.randn(pick.shape, generator=generator, device=weights.device, dtype=weights.dtype)
    mean, scale = means.gather(-1, pick), log_scale.gather(-1, pick).exp()
    return (mean + scale * noise)[..., 0]


# --- questions on feature rows ------------------------------------------------------------------------------


@dataclass
class Rows:
    """Feature rows as the network sees them: ``codes`` (n, discrete), standardized ``y`` (n, continuous),
    ``ladj`` (log|dy/dx| per continuous feature, with the cell width of dequantized ones: the Jacobian that
    makes a density in y one in the user's units) and ``present`` (the continuous value exists: not
    missing, not on an atom)."""

    codes: Tensor
    y: Tensor
    ladj: Tensor
    present: Tensor


def prepare(net: ConditionalNet, preprocess: Preprocess, x: Tensor) -> Rows:
    """``Rows`` of feature rows ``x`` (data units; NaN: an absent continuous value)."""
    disc, cont = net.disc, net.cont
    codes = x[:, disc].nan_to_num(0.0).floor().long().clamp_min(0)
    if disc:
        top = torch.tensor([net.layout.levels[i] - 1 for i in disc], device=x.device)
        codes = torch.minimum(codes, top)
    values = x[:, cont]
    y, ladj = preprocess.elementwise(values)
    return Rows(codes, y, ladj + preprocess.log_widths, ~torch.isnan(values))


class Roles:
    """Which features of each row are observed and which are targets, from per-column masks (n, columns)."""

    def __init__(self, net: ConditionalNet, observed: Tensor, target: Tensor) -> None:
        column_of = torch.tensor(net.layout.column_of, device=observed.device, dtype=torch.long)
        self.observed, self.target = observed[:, column_of], target[:, column_of]
        self.disc, self.cont = net.disc, net.cont

    def context(self, net: ConditionalNet, rows: Rows) -> Tensor:
        dtype = rows.y.dtype
        seen = net.encode(rows.codes, rows.y, self.observed[:, self.disc], self.observed[:, self.cont] & rows.present)
        return torch.cat([seen, self.observed.to(dtype), self.target.to(dtype)], 1)

    def inputs(self, net: ConditionalNet, rows: Rows) -> Tensor:
        # The observed values too: a factor sees those before it through the same masked weights as the
        # targets before it (the context shows them all), so "species is Chinstrap" teaches the factor of
        # the island the same way whether the species was given or drawn first.
        known = self.target | self.observed
        return net.encode(rows.codes, rows.y, known[:, self.disc], known[:, self.cont] & rows.present)


def log_prob(net: ConditionalNet, rows: Rows, roles: Roles, units: bool = True) -> Tensor:
    """log p(targets | observed) per row: the targets' discrete codes and present continuous values (in the
    user's units with ``units``, else in the standardized space the network is trained in)."""
    out = net.outputs(roles.inputs(net, rows), roles.context(net, rows))
    logps, weights, means, log_scale = net.split_outputs(out)
    total = rows.y.new_zeros(len(rows.y))
    for r, logp in enumerate(logps):
        term = logp.gather(1, rows.codes[:, r : r + 1])[:, 0]
        total = total + torch.where(roles.target[:, net.disc[r]], term, 0.0)
    if net.n_cont:
        density = mixture_log_prob(rows.y, weights, means, log_scale) + (rows.ladj if units else 0.0)
        total = total + torch.where(roles.target[:, net.cont] & rows.present, density, 0.0).sum(1)
    return total


def sample(net: ConditionalNet, rows: Rows, roles: Roles, generator: torch.Generator | None) -> Rows:
    """``rows`` with every target drawn from p(targets | observed), feature by feature in network order
    (one pass of the network per feature that is a target in some row). The targets' codes and values
    are replaced; ``present`` is recomputed from the drawn states."""
    codes, y, present = rows.codes.clone(), rows.y.clone(), rows.present.clone()
    current = Rows(codes, y, rows.ladj, present)
    context = roles.context(net, rows)
    for r, feature in enumerate(net.disc):
        chosen = roles.target[:, feature]
        if not chosen.any():
            continue
        logps = net.split_outputs(net.outputs(roles.inputs(net, current), context))[0]
        drawn = torch.multinomial(logps[r].exp(), 1, generator=generator)[:, 0]
        codes[:, r] = torch.where(chosen, drawn, codes[:, r])
    for c, feature in enumerate(net.cont):
        state = net.layout.state_of[feature]
        if state >= 0:  # a value exists where the column's state is "a value" (code 0)
            rank = net.disc.index(state)
            present[:, c] = torch.where(roles.target[:, feature], codes[:, rank] == 0, present[:, c])
        else:
            present[:, c] = present[:, c] | roles.target[:, feature]
    for c, feature in enumerate(net.cont):
        chosen = roles.target[:, feature] & present[:, c]
        if not chosen.any():
            continue
        _, weights, means, log_scale = net.split_outputs(net.outputs(roles.inputs(net, current), context))
        y[:, c] = torch.where(chosen, draw_values(net, c, weights, means, log_scale, generator), y[:, c])
    return current


def to_features(net: ConditionalNet, preprocess: Preprocess, rows: Rows, x: Tensor, roles: Roles) -> Tensor:
    """Feature rows (data units) of ``rows``: the targets from ``rows``, everything else as in ``x``."""
    out = x.clone()
    target_d, target_c = roles.target[:, net.disc], roles.target[:, net.cont]
    out[:, net.disc] = torch.where(target_d, rows.codes.to(x.dtype) + 0.5, x[:, net.disc])
    values = preprocess.inverse(rows.y)[0] if net.n_cont else x[:, net.cont]
    values = torch.where(rows.present, values, math.nan)
    out[:, net.cont] = torch.where(target_c, values, x[:, net.cont])
    return out


# --- training -----------------------------------------------------------------------------------------------

PATIENCE = 10  # epochs without a better validation NLL before the rate is cut or the fit stops
MAX_EPOCHS = 200
# The network's whole budget. On the 50,000-row, 16-column mixture of benchmarks/peers.py it went on improving
# for all of its 200 epochs (17,600 steps: validation NLL 1.01 at 30 epochs, 0.61 at 200) and cost more than the
# joint fit itself; the answers it gives are worth a share of a fit's time, not most of it.
MAX_STEPS = 4_000
STEPS_PER_EPOCH = 20  # at least this many minibatches per epoch on small tables
MIN_BATCH, MAX_BATCH = 32, 512
LR = 3e-3
MIN_STEPS = 2_000  # steps before the validation NLL may stop the fit (see ``fit_conditional``)
FULL_BUDGET_EPOCHS = 200  # a joint fit planned this long (the default's) gets the whole budget; see ``budget_share``
MIN_BUDGET_STEPS = 200  # the least a shorter fit's network gets
VAL_DRAWS = 4  # random questions per validation row: a less noisy figure to stop on
MAX_VAL_ROWS = 50_000
LR_CUTS, LR_CUT = 2, 0.3  # when the validation NLL stalls: continue from the best weights at 0.3x the rate, twice


def budget_share(epochs: int) -> float:
    """The share of the network's step budget (``MIN_STEPS``, ``MAX_STEPS``) for a joint fit planned for
    ``epochs``: all of it from ``FULL_BUDGET_EPOCHS`` on, proportionally less below. A user who asks for a
    5-epoch fit asks for a quick model: the network of a 200-column table took 105 s at the full budget where
    the 5 joint epochs took 0.6 s. Its answers are then as rough as the joint's."""
    return min(1.0, max(epochs, 1) / FULL_BUDGET_EPOCHS)


def missing_columns(net: ConditionalNet, rows: Rows) -> Tensor:
    """(n, columns) bool: the row's cell of that column is missing."""
    missing = torch.zeros(len(rows.codes), net.layout.columns, dtype=torch.bool, device=rows.codes.device)
    for r, feature in enumerate(net.disc):
        code = net.layout.missing_code[feature]
        if code >= 0:
            missing[:, net.layout.column_of[feature]] |= rows.codes[:, r] == code
    return missing


def random_roles(net: ConditionalNet, rows: Rows, generator: torch.Generator) -> Roles:
    """Random observed and target columns per row, so that every kind of question is trained: the share of
    observed columns is uniform on [0, 1]; of the rest, every column is a target in half of the rows (the
    questions of ``impute``, ``sample --given`` and ``logprob --target`` with the whole row known) and a
    uniformly random share of them in the other half (marginalised columns). A missing cell is neither."""
    n, columns = len(rows.codes), net.layout.columns
    device = rows.codes.device

    def uniform(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=generator.device).to(device)

    missing = missing_columns(net, rows)
    observed = (uniform(n, columns) < uniform(n, 1)) & ~missing
    share = torch.where(uniform(n, 1) < 0.5, 1.0, uniform(n, 1))
    target = (uniform(n, columns) < share) & ~observed & ~missing
    return Roles(net, observed, target)


def fit_conditional(
    net: ConditionalNet,
    preprocess: Preprocess,
    train: Tensor,
    val: Tensor,
    generator: torch.Generator,
    *,
    share: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Fit ``net`` by maximum likelihood of random conditional questions (``random_roles``) on the feature
    rows ``train`` (Adam on minibatches; dequantized features get fresh noise every step, as in the joint
    fit), keeping the weights of the best mean NLL on ``val`` under fixed random questions; when that has
    not improved for ``PATIENCE`` epochs, go on from them at a smaller rate (``LR_CUTS``), then stop.

    The first ``MIN_STEPS`` steps are not judged: the rare combinations that a conditional question is
    often about (a label that 3% of rows hold, which the other columns determine) are learnt late, after
    the validation NLL, dominated by the common rows, has flattened (on tests/test_conditional.py's table
    P(the species' island | a rare species) went from 1/3 to 0.99 between steps 600 and 1,300 with a flat
    validation NLL, and early stopping kept the 1/3 in one run of three). Returns the validation NLL (nats/row, in standardized units:
    the figure training compares) of the start and of the weights kept, and the epochs and steps run. ``progress`` is
    called after every step with a line of state (``progress.Reporter.status``). ``share`` (``budget_share``)
    scales the step budget ``MAX_STEPS`` (down to ``MIN_BUDGET_STEPS``), and the steps not judged are at most
    half of it."""
    max_steps = max(MIN_BUDGET_STEPS, round(MAX_STEPS * share))
    min_steps = min(MIN_STEPS, max_steps // 2)
    batch = min(MAX_BATCH, max(MIN_BATCH, len(train) // STEPS_PER_EPOCH))
    set_range(net, preprocess, train)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    val_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    was_training = preprocess.training
    start = _val_nll(net, preprocess, val, val_seed)
    best, nll = math.inf, start
    best_state = {k: v.clone() for k, v in net.state_dict().items()}
    stale, epoch, steps, cuts = 0, 0, 0, 0
    try:
        while stale < PATIENCE and steps < max_steps and epoch < MAX_EPOCHS:
            epoch += 1
            net.train()
            preprocess.train()  # dequantization noise
            order = torch.randperm(len(train), generator=generator, device=generator.device).to(train.device)
            for index in order.split(batch):
                rows = prepare(net, preprocess, train[index])
                loss = -log_prob(net, rows, random_roles(net, rows, generator), units=False).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                optimizer.step()
                steps += 1
                if progress is not None:
                    progress(f"conditional-questions network: epoch {epoch}, step {steps}, validation NLL {nll:.4f}")
            nll = _val_nll(net, preprocess, val, val_seed)
            if steps < min_steps and epoch < MAX_EPOCHS // 2:
                continue  # still learning what the validation NLL hardly shows
            if math.isinf(best) or nll < best - 1e-4:
                best, stale = nll, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
            if stale >= PATIENCE and cuts < LR_CUTS:  # go on from the best weights at a smaller step
                cuts, stale = cuts + 1, 0
                net.load_state_dict(best_state)
                for group in optimizer.param_groups:
                    group["lr"] *= LR_CUT
    finally:
        preprocess.train(was_training)
        net.eval()
        net.zero_grad(set_to_none=True)  # no stale gradient reaches a norm computed over a whole flow
    net.load_state_dict(best_state)
    return {"start_val_nll": start, "val_nll": best, "epochs": epoch, "steps": steps}


@torch.no_grad()
def set_range(net: ConditionalNet, preprocess: Preprocess, train: Tensor) -> None:
    """The standardized range of each continuous feature's present training values (``draw_values``)."""
    was_training = preprocess.training
    preprocess.eval()
    rows = prepare(net, preprocess, train)
    preprocess.train(was_training)
    for c in range(net.n_cont):
        present = rows.y[rows.present[:, c], c]
        if len(present):
            net.y_low[c], net.y_high[c] = present.min(), present.max()


@torch.no_grad()
def _val_nll(net: ConditionalNet, preprocess: Preprocess, val: Tensor, seed: int) -> float:
    net.eval()
    preprocess.eval()
    generator = torch.Generator(device=val.device).manual_seed(seed)
    total = 0.0
    val = val[: max(1, MAX_VAL_ROWS // VAL_DRAWS)].repeat(VAL_DRAWS, 1)
    for part in val.split(65536):
        rows = prepare(net, preprocess, part)
        total -= float(log_prob(net, rows, random_roles(net, rows, generator), units=False).double().sum())
    return total / max(len(val), 1)
