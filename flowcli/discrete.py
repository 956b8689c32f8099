"""The exact probability of a row's discrete part: P(d) = prod_i P(d_i | d_<i).

The discrete features of a table (categorical columns, and the state of a numeric column: a value, missing,
or one of its atoms; see ``roles/numeric.py``) are modelled by an autoregressive categorical network, a
MADE (Germain, Gregor, Murray & Larochelle 2015) whose inputs are the one-hot codes of the features and
whose output holds one softmax head per feature: head i sees only the features before i, so the product
of the heads is a normalized distribution over every combination of codes, summing to 1 exactly. This
replaces the dequantized cells of earlier versions, whose mass bled into neighbouring cells (impossible
category pairs in samples) and whose probability was an integral costing many flow passes per row.

Latent space: feature i's code maps to the midpoint of its interval of the conditional CDF, through the
normal quantile, z_i = Phi^-1(F_i(code - 1) + P_i(code) / 2); ``decode`` takes a z_i back to the code
whose interval holds Phi(z_i). Sampling draws z ~ N(0, I) and decodes it, so the codes come out with the
model's exact probabilities, and ``decode(encode(d)) == d`` for every code whose conditional probability is
above about 1e-15 (the float64 resolution of a CDF near 1; a rarer one decodes to a neighbouring level).

Training starts from the product of the features' training frequencies (``initialize``: every head's
bias is the log of its frequencies, its weights zero); ``fit_discrete`` keeps that start unless an epoch
beats it on the validation rows.

The fit uses the training rows ``train.Trainer`` hands it: at most ``GAUSSIAN_ROWS`` (200,000) of them, a
random subset of a larger table, and in a distributed fit rank 0's share (its weights are the ones every
rank starts from). Fitting on every row would help the rarest combinations of tables of millions of rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .layers.nets import MaskedLinear

# Added to every count before taking the log of the training frequencies: a level that occurs only in
# the rows not used for initialization still gets a finite starting probability.
PSEUDO_COUNT = 0.5


def hidden_width(levels: Sequence[int]) -> int:
    """The width of the network's two hidden layers: enough for the one-hot inputs, within [32, 256]."""
    return max(32, min(256, 2 * sum(levels)))


class DiscreteModel(nn.Module):
    """An autoregressive categorical model of the codes of ``levels[i]``-valued features, in feature order."""

    # buffers
    offsets: Tensor  # where feature i's one-hot block (and its logits) start

    def __init__(self, levels: Sequence[int], hidden: Sequence[int] | None = None) -> None:
        super().__init__()
        self.levels = [int(k) for k in levels]
        total = sum(self.levels)
        hidden = list(hidden) if hidden is not None else [hidden_width(self.levels)] * 2
        self.register_buffer("offsets", torch.tensor([0, *torch.tensor(self.levels).cumsum(0).tolist()]))
        masks = _masks(self.levels, hidden)
        layers: list[nn.Module] = []
        for mask in masks[:-1]:
            layers += [MaskedLinear(mask.shape[1], mask.shape[0], mask), nn.ReLU()]
        self.head = MaskedLinear(masks[-1].shape[1], total, masks[-1])
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.body = nn.Sequential(*layers)

    @property
    def width(self) -> int:
        """The width of the one-hot encoding: the context the continuous flow is conditioned on."""
        return sum(self.levels)

    def one_hot(self, codes: Tensor) -> Tensor:
        """(n, D) integer codes -> (n, sum(levels)) one-hot blocks, in the dtype of the weights."""
        dtype = self.head.weight.dtype
        parts = [nn.functional.one_hot(codes[:, i], k).to(dtype) for i, k in enumerate(self.levels)]
        return torch.cat(parts, 1)

    def logits(self, one_hot: Tensor) -> Tensor:
        """Every head's logits (n, sum(levels)); head i depends on the blocks before i only."""
        return self.head(self.body(one_hot))

    def _log_softmax(self, logits: Tensor) -> list[Tensor]:
        bounds = self.offsets.tolist()
        return [torch.log_softmax(logits[:, a:b], 1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def log_prob(self, codes: Tensor, one_hot: Tensor | None = None) -> Tensor:
        """log P(codes) per row, exact."""
        one_hot = self.one_hot(codes) if one_hot is None else one_hot
        heads = self._log_softmax(self.logits(one_hot))
        return torch.stack([h.gather(1, codes[:, i : i + 1])[:, 0] for i, h in enumerate(heads)], 1).sum(1)

    @torch.no_grad()
    def initialize(self, codes: Tensor) -> None:
        """Start as the product of the training frequencies of ``codes``: each head's bias is the log of its
        feature's frequencies (its weights are zero)."""
        parts = []
        for i, k in enumerate(self.levels):
            counts = torch.bincount(codes[:, i], minlength=k).to(self.head.bias.dtype) + PSEUDO_COUNT
            parts.append(counts.log() - counts.sum().log())
        self.head.bias.copy_(torch.cat(parts))

    def encode(self, codes: Tensor) -> Tensor:
        """Codes -> latent: the normal quantile of the midpoint of each code's conditional CDF interval."""
        heads = [h.exp() for h in self._log_softmax(self.logits(self.one_hot(codes)))]
        z = []
        for i, probs in enumerate(heads):
            below = (probs.cumsum(1) - probs).gather(1, codes[:, i : i + 1])[:, 0]
            mid = below + 0.5 * probs.gather(1, codes[:, i : i + 1])[:, 0]
            z.append(_normal_quantile(mid))
        return torch.stack(z, 1)

    def decode(self, z: Tensor) -> Tensor:
        """Latent -> codes, feature by feature (head i needs the codes before i): the code whose interval
        of the conditional CDF holds Phi(z_i)."""
        n, width = z.shape[0], self.width
        codes = torch.zeros(n, len(self.levels), dtype=torch.long, device=z.device)
        one_hot = z.new_zeros(n, width).to(self.head.weight.dtype)
        bounds = self.offsets.tolist()
        u = torch.special.ndtr(z)
        for i, k in enumerate(self.levels):
            logits = self.logits(one_hot)[:, bounds[i] : bounds[i + 1]]
            cdf = torch.softmax(logits, 1).cumsum(1)
            # The number of levels whose CDF is <= u: a code of tiny probability whose midpoint rounds onto
            # the CDF of the level below is still found.
            code = torch.searchsorted(cdf.contiguous(), u[:, i : i + 1].to(cdf.dtype).contiguous(), right=True)[:, 0]
            codes[:, i] = code.clamp(max=k - 1)
            one_hot[:, bounds[i] : bounds[i + 1]] = nn.functional.one_hot(codes[:, i], k).to(one_hot.dtype)
        return codes


def _normal_quantile(p: Tensor) -> Tensor:
    tiny = torch.finfo(p.dtype).tiny
    return torch.special.ndtri(p.clamp(tiny, 1 - torch.finfo(p.dtype).eps))


def _masks(levels: Sequence[int], hidden: Sequence[int]) -> list[Tensor]:
    """MADE masks over one-hot blocks: block i has degree i + 1; hidden degrees cycle 1..D-1 (0 when D == 1,
    so a single feature's head sees no input); head i connects to hidden units of degree < i + 1."""
    count = len(levels)
    degree_in = torch.cat([torch.full((k,), i + 1) for i, k in enumerate(levels)])
    low, span = min(1, count - 1), max(1, count - 1)
    degrees, masks = degree_in, []
    for width in hidden:
        degree_h = torch.arange(width) % span + low
        masks.append(degree_h[:, None] >= degrees[None, :])
        degrees = degree_h
    masks.append(degree_in[:, None] > degrees[None, :])
    return masks


def fit_discrete(
    model: DiscreteModel,
    train: Tensor,
    val: Tensor,
    generator: torch.Generator,
    lr: float = 3e-3,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Fit ``model`` to the codes ``train`` by maximum likelihood (Adam on minibatches), keeping the weights
    of the best mean NLL on the codes ``val``; stop when that has not improved for ``PATIENCE`` epochs.

    The discrete part is a factor of the likelihood of its own, log P(d), with parameters of its own, so
    it is fitted on its own, before the flow, rather than jointly: its optimum does not depend on the
    flow's, a small table gives the joint fit few optimizer steps (on penguins.csv, 60, which left the
    species/island pairs independent: 31% of samples in pairs the data never show), and its early
    stopping then does not depend on the continuous part's. The fit starts from the product of the
    training frequencies (``initialize``), and that start is kept unless an epoch beats it on ``val``.
    Returns the validation NLL (nats/row) of the start and of the weights kept, and the epochs run.
    ``progress`` is called after every step with a line of state (``progress.Reporter.status``).
    """
    batch = min(MAX_BATCH, max(MIN_BATCH, len(train) // STEPS_PER_EPOCH))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    best = start = _mean_nll(model, val)
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    stale, epoch, steps = 0, 0, 0
    while (stale < PATIENCE or steps < MIN_STEPS) and steps < MAX_STEPS:
        epoch += 1
        order = torch.randperm(len(train), generator=generator, device=generator.device).to(train.device)
        for index in order.split(batch):
            loss = -model.log_prob(train[index]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if progress is not None:
                progress(f"discrete part: epoch {epoch}, step {steps}, best validation NLL {best:.4f}")
        nll = _mean_nll(model, val)
        if nll < best - 1e-6:
            best, stale = nll, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
    model.load_state_dict(best_state)
    return {"start_val_nll": start, "val_nll": best, "epochs": epoch}


PATIENCE = 10  # epochs without a better validation NLL before the discrete fit stops
MAX_STEPS = 20_000
# Steps before early stopping may end the fit (the weights kept are still the best on validation). Rare
# combinations are learnt late, after the validation NLL, dominated by the common ones, has flattened: on
# the 5,000-row table of tests/test_conditional.py, where a 3% species lives on one island of three,
# stopping at patience alone (520 steps) left 3.4% of that species' samples on the other islands; 2,000
# steps, 0.25%.
MIN_STEPS = 2_000
STEPS_PER_EPOCH = 20  # at least this many minibatches per epoch on small tables
MIN_BATCH, MAX_BATCH = 16, 1024


@torch.no_grad()
def _mean_nll(model: DiscreteModel, codes: Tensor) -> float:
    total = sum(float(-model.log_prob(part).double().sum()) for part in codes.split(65536))
    return total / max(len(codes), 1)
