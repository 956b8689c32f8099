"""Conditioner networks shared by the coupling and autoregressive layers.

Conditioners see their inputs softly bounded, ``bound_inputs(x) = INPUT_BOUND * tanh(x / INPUT_BOUND)``
(about the identity within 2 units, never beyond +-INPUT_BOUND). A network only learns what to do where
the data are; beyond them a ReLU network extrapolates linearly, and in a flow that extrapolation
compounds: a sample drawn in the latent tails lands outside the data, where the next dimension's shift
and scale, then the next layer's, grow without bound (a MAF fitted to a table with |a| < 3.3 drew about
2% absurd rows, a down to -1.08e6, which the model then scored -4.2e16). With bounded inputs every shift and
scale stays within what the network computes on a bounded box, so a layer cannot blow up a sample. The
bound acts on the conditioner's input only, not on the transformed variable, so the transform stays an
exact bijection with the same triangular Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn

from .base import soft_clamp

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}
INPUT_BOUND = 5.0  # the flow's features are about N(0, 1) after the whitening: 5 is the edge of any data


# In-place versions of the activations, for ``MADE.solve`` without autograd (GELU has none: computed, then copied).
_IN_PLACE: dict[type, Callable[[Tensor], object]] = {
    nn.ReLU: torch.relu_,
    nn.Tanh: torch.tanh_,
    nn.ELU: nn.functional.elu_,
    nn.SiLU: lambda t: nn.functional.silu(t, inplace=True),
}


def _activate_in_place(activation: nn.Module, t: Tensor) -> None:
    in_place = _IN_PLACE.get(type(activation))
    if in_place is not None:
        in_place(t)
    else:
        t.copy_(activation(t))


def bound_inputs(x: Tensor) -> Tensor:
    """A conditioner's inputs, softly bounded to (-INPUT_BOUND, INPUT_BOUND) (see the module docstring)."""
    return soft_clamp(x, INPUT_BOUND)


def mlp(n_in: int, hidden: Sequence[int], n_out: int, activation: str = "relu") -> nn.Sequential:
    """A plain MLP whose last layer starts at zero, so the layer it conditions starts as the identity."""
    sizes = [n_in, *hidden]
    modules: list[nn.Module] = []
    for a, b in pairwise(sizes):
        modules += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    last = nn.Linear(sizes[-1], n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    modules.append(last)
    return nn.Sequential(*modules)


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al. 2015)."""

    mask: Tensor  # buffer

    def __init__(self, n_in: int, n_out: int, mask: Tensor) -> None:
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder: output ``[..., i, :]`` depends only on inputs that come before ``i`` in ``order``.

    Germain, Gregor, Murray & Larochelle (2015), "MADE: Masked Autoencoder for Distribution Estimation".
    ``order`` is a permutation of ``range(dim)``; returns a tensor of shape ``(batch, dim, n_params)``.

    With ``context`` > 0 the network also takes a context vector (the one-hot discrete part of a row,
    ``model.Flow``) that every output may depend on, as in conditional MAF (Papamakarios et al. 2017,
    section 3.4): it enters the first hidden layer unmasked, and hidden degrees then start at 0, so the
    first variable's parameters depend on the context too (units of degree 0 see the context only).

    The output units are laid out parameter-major (all variables' first parameter, then all second
    parameters, ...), so ``params[..., j]`` is a contiguous slice of memory: the elementwise math that
    follows (clamping, exp, the spline arithmetic) runs on dense tensors in both directions.
    """

    order: Tensor  # buffer

    def __init__(
        self, dim: int, hidden: Sequence[int], n_params: int, order: Tensor, activation: str = "relu", context: int = 0
    ) -> None:
        super().__init__()
        self.dim, self.n_params, self.hidden, self.context = dim, n_params, list(hidden), context
        masks, degrees = self._masks(order)
        layers: list[nn.Module] = []
        for mask in masks[:-1]:
            layers += [MaskedLinear(mask.shape[1], mask.shape[0], mask), ACTIVATIONS[activation]()]
        last = MaskedLinear(masks[-1].shape[1], masks[-1].shape[0], masks[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        # The context's share of the first layer's pre-activation (no bias: the masked layer has one); without
        # hidden layers that is the output layer, which starts at zero, so the context's share does too.
        self.context_in = nn.Linear(context, masks[0].shape[0], bias=False) if context else None
        if self.context_in is not None and not self.hidden:
            nn.init.zeros_(self.context_in.weight)
        # Saved with the weights: a random order cannot be rebuilt from the config, and sampling needs it.
        self.register_buffer("order", order.clone())
        # ends[l][k] = number of units of hidden layer l with degree <= k (a prefix, since degrees are sorted).
        self._ends = [torch.searchsorted(d, torch.arange(dim + 1), right=True).tolist() for d in degrees]

    def _masks(self, order: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The 0/1 masks of every layer for a variable order, and the hidden layers' unit degrees."""
        dim = self.dim
        degree_in = torch.empty(dim, dtype=torch.long)
        degree_in[order.cpu()] = torch.arange(1, dim + 1)  # variable order[k] is the (k+1)-th to be generated
        # Hidden degrees cycle through 1..dim-1 so every hidden unit can feed some output; 0 when dim == 1.
        # They are sorted so that the units of each degree are contiguous (see ``solve``).
        low, span = (0, dim) if self.context else (min(1, dim - 1), max(1, dim - 1))
        degrees = [degree_in]
        masks = []
        for width in self.hidden:
            degree_h = (torch.arange(width) % span + low).sort().values
            masks.append(degree_h[:, None] >= degrees[-1][None, :])
            degrees.append(degree_h)
        degree_out = degree_in.repeat(self.n_params)  # unit j * dim + i is parameter j of variable i
        masks.append(degree_out[:, None] > degrees[-1][None, :])
        return masks, degrees[1:]

    def masks_match_order(self) -> bool:
        """Whether the (loaded) masks are the ones of the (loaded) order: a checkpoint check."""
        linears = [m for m in self.net if isinstance(m, MaskedLinear)]
        expected, _ = self._masks(self.order)
        return all(torch.equal(lin.mask.cpu().bool(), mask) for lin, mask in zip(linears, expected, strict=True))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context_in is None or context is None:
            out = self.net(bound_inputs(x))
        else:
            first, rest = self.net[0], self.net[1:]
            out = rest(first(bound_inputs(x)) + self.context_in(context))
        return out.view(*x.shape[:-1], self.n_params, self.dim).transpose(-1, -2)

    def solve(
        self, z: Tensor, invert: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Invert an autoregressive transform in one network pass instead of ``dim`` passes.

        ``invert(z_g, params_g) -> (x_g, ladj_g)`` inverts the elementwise transformer of a group of ``g``
        variables: shapes (batch, g) and (batch, g, n_params), as in the forward direction. Variables are
        solved in order; at each step only the hidden units of the degrees just reached are computed,
        because units of lower degree depend on variables already solved and were computed at earlier
        steps. The total work is one forward pass of the network, split into slices.

        Variables are solved together when their parameters need no hidden unit that is not yet known:
        with fewer hidden units than variables (a 300-column table, hidden [64, 64]) the last hidden layer
        has no unit of most degrees, and every variable past the last of its degrees is solved in one
        step (66 steps instead of 300 there). The result is the same as one variable at a time.
        """
        linears = [m for m in self.net if isinstance(m, MaskedLinear)]
        acts = [m for m in self.net if not isinstance(m, MaskedLinear)]
        weights = [lin.weight * lin.mask for lin in linears]
        weights[0] = weights[0][:, self.order]  # input columns in solving order
        # The context's contribution to the first hidden layer, computed once for all steps.
        context_part = self.context_in(context) if self.context_in is not None and context is not None else None
        if not torch.is_grad_enabled():
            return self._solve_in_place(z, invert, linears, acts, weights, context_part)
        n = z.shape[0]
        # Under autograd (IAF's density, gradients through sampling) the tensors grow by concatenation.
        hidden: list[Tensor] = [z.new_zeros(n, 0) for _ in weights[:-1]]
        solved = z.new_zeros(n, 0)  # x in solving order
        # The network sees bounded inputs, as in forward: each solved variable is bounded once, when solved
        # (bounding the whole solved prefix at every step cost dim^2 / 2 tanh per row: most of a wide model's time).
        bounded = z.new_zeros(n, 0)
        ladj = z.new_zeros(n)
        done = [0] * len(weights[:-1])  # hidden units computed so far, per layer
        for k, stop in self._groups():
            # This step solves the variables of degrees k+1..stop: first the hidden units of degree <= k not
            # yet computed (they only see variables of degree <= k, all solved), then those variables' parameters.
            below, known = bounded, k
            for l_idx, w in enumerate(weights[:-1]):
                lo, hi = done[l_idx], self._ends[l_idx][k]
                if hi > lo:
                    pre = below[:, :known] @ w[lo:hi, :known].T + linears[l_idx].bias[lo:hi]
                    if l_idx == 0 and context_part is not None:
                        pre = pre + context_part[:, lo:hi]
                    hidden[l_idx] = torch.cat([hidden[l_idx], acts[l_idx](pre)], 1)
                    done[l_idx] = hi
                below, known = hidden[l_idx], hi
            units = self._output_units(k, stop)
            params = below[:, :known] @ weights[-1][units, :known].T + linears[-1].bias[units]
            if not self.hidden and context_part is not None:
                params = params + context_part[:, units]
            # (n, n_params * g) parameter-major -> (n, g, n_params)
            x_group, ladj_group = invert(
                z[:, self.order[k:stop]], params.view(n, self.n_params, stop - k).transpose(1, 2)
            )
            solved = torch.cat([solved, x_group], 1)
            bounded = torch.cat([bounded, bound_inputs(x_group)], 1)
            ladj = ladj + ladj_group.sum(1)
        return solved[:, torch.argsort(self.order)], ladj

    def _solve_in_place(
        self,
        z: Tensor,
        invert: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
        linears: list[MaskedLinear],
        acts: list[nn.Module],
        weights: list[Tensor],
        context_part: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """``solve`` without autograd (sampling, decoding): the same steps, written into buffers laid out
        unit-major, (units, rows), so that a step's new hidden units are a contiguous block that the matrix
        product writes into directly (``addmm(out=)``) and the activation updates in place. Row-major buffers
        cost a zero fill and a strided copy per block: 30% of sampling a 10-column MAF."""
        n = z.shape[0]
        hidden = [z.new_empty(w.shape[0], n) for w in weights[:-1]]  # a unit is read only after it is written
        bounded = z.new_empty(self.dim, n)  # bound_inputs(x) in solving order, (variables, rows)
        solved = z.new_empty(n, self.dim)
        context_t = context_part.T.contiguous() if context_part is not None else None
        ladj = z.new_zeros(n)
        done = [0] * len(weights[:-1])
        for k, stop in self._groups():
            below, known = bounded, k
            for l_idx, w in enumerate(weights[:-1]):
                lo, hi = done[l_idx], self._ends[l_idx][k]
                if hi > lo:
                    block = hidden[l_idx][lo:hi]
                    torch.addmm(linears[l_idx].bias[lo:hi, None], w[lo:hi, :known], below[:known], out=block)
                    if l_idx == 0 and context_t is not None:
                        block += context_t[lo:hi]
                    _activate_in_place(acts[l_idx], block)
                    done[l_idx] = hi
                below, known = hidden[l_idx], hi
            units = self._output_units(k, stop)
            params = torch.addmm(linears[-1].bias[units, None], weights[-1][units, :known], below[:known])
            if not self.hidden and context_t is not None:
                params += context_t[units]
            # (n_params * g, n) -> (n, g, n_params)
            x_group, ladj_group = invert(
                z[:, self.order[k:stop]], params.view(self.n_params, stop - k, n).permute(2, 1, 0)
            )
            solved[:, k:stop] = x_group
            bounded[k:stop] = bound_inputs(x_group).T
            ladj += ladj_group.sum(1)
        return solved[:, torch.argsort(self.order)], ladj

    def _output_units(self, k: int, stop: int) -> Tensor:
        """The output units of the parameters of the variables in solving positions k..stop-1, parameter-major:
        parameter j of variable v is unit j * dim + v."""
        variables = self.order[k:stop]
        return (variables[None, :] + self.dim * torch.arange(self.n_params, device=variables.device)[:, None]).flatten()

    def _groups(self) -> list[tuple[int, int]]:
        """The steps of ``solve``: (k, stop) solves the variables in solving positions k..stop-1 together.
        Position j's parameters need the last hidden layer's units of degree <= j; a group extends while
        that layer has no unit of the degrees it passes (without hidden layers, one variable per step)."""
        if not self.hidden:
            return [(k, k + 1) for k in range(self.dim)]
        ends, groups, k = self._ends[-1], [], 0
        while k < self.dim:
            stop = k + 1
            while stop < self.dim and ends[stop] == ends[k]:
                stop += 1
            groups.append((k, stop))
            k = stop
        return groups


def autoregressive_order(dim: int, index: int, order: str) -> Tensor:
    """Variable order of an autoregressive layer: alternating natural/reversed by stack position, or random."""
    if order == "random":
        return torch.randperm(dim)
    natural = torch.arange(dim)
    return natural if index % 2 == 0 else natural.flip(0)


def coupling_mask(dim: int, index: int, mask: str) -> Tensor:
    """Boolean mask of the dimensions a coupling layer *transforms*; the others condition it.

    ``alternate`` transforms every other dimension, ``half`` the second half; both flip with the
    layer's position in the stack so consecutive coupling layers transform complementary sets.
    """
    i = torch.arange(dim)
    if mask == "half":
        transformed = i >= dim // 2
    else:
        transformed = i % 2 == 1
    if dim == 1:
        transformed = torch.ones(1, dtype=torch.bool)
    elif index % 2 == 1:
        transformed = ~transformed
    return transformed
