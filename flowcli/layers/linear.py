"""Elementwise and linear layers: ``linear`` (LU), ``actnorm``, ``permute``, ``whiten``, ``residualize``."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from .base import Layer, register


@register("linear")
class LULinear(Layer):
    """Invertible linear map z = W x + b with W = P L (U + diag(s)), invertible by construction.

    Kingma & Dhariwal (2018), "Glow", section 3.2 (LU-decomposed 1x1 convolution). P is a fixed
    permutation, L unit lower-triangular, U strictly upper-triangular, s = sign * exp(log_s) never zero.
    log|det| = sum(log_s). Both directions cost one pass (the inverse uses two triangular solves).

    Options:
      init: ``orthogonal`` (a random rotation, volume-preserving, mixes all dimensions) or ``identity``.
    """

    # buffers
    perm: Tensor
    sign: Tensor
    eye: Tensor

    def __init__(self, dim: int, *, init: Literal["orthogonal", "identity"] = "orthogonal") -> None:
        super().__init__()
        if init == "orthogonal":
            q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
            p, lower, u = torch.linalg.lu(q)
        else:
            p = lower = u = torch.eye(dim, dtype=torch.float64)
        diag = torch.diagonal(u)
        self.register_buffer("perm", p.to(torch.get_default_dtype()))
        self.register_buffer("sign", torch.sign(diag).to(torch.get_default_dtype()))
        self.lower = nn.Parameter(torch.tril(lower, -1).to(torch.get_default_dtype()))
        self.upper = nn.Parameter(torch.triu(u, 1).to(torch.get_default_dtype()))
        self.log_s = nn.Parameter(diag.abs().log().to(torch.get_default_dtype()))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("eye", torch.eye(dim))

    def _factors(self) -> tuple[Tensor, Tensor]:
        lower = torch.tril(self.lower, -1) + self.eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign * self.log_s.exp())
        return lower, upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        weight = self.perm @ lower @ upper
        z = x @ weight.T + self.bias
        return z, self.log_s.sum().expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        rhs = (z - self.bias) @ self.perm  # = (P^T (z - b)^T)^T
        y = torch.linalg.solve_triangular(lower, rhs.T, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True).T
        return x, -self.log_s.sum().expand(z.shape[0])


@register("actnorm")
class ActNorm(Layer):
    """Per-dimension affine z = (x - loc) * exp(-log_scale), initialized from the first batch.

    Kingma & Dhariwal (2018), "Glow", section 3.1. The data-dependent initialization gives each
    dimension zero mean and unit variance at the start of training. Both directions are one pass.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(x.std(0).clamp_min(1e-6).log() if x.shape[0] > 1 else torch.zeros_like(self.loc))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = z * torch.exp(self.log_scale) + self.loc
        return x, self.log_scale.sum().expand(z.shape[0])


@register("permute")
class Permute(Layer):
    """Fixed permutation of the dimensions (log|det| = 0), to let later layers mix other dimensions.

    Options:
      order: ``reverse`` or ``random`` (drawn once from the seed and stored in the checkpoint).
    """

    # buffers
    perm: Tensor
    inverse_perm: Tensor

    def __init__(self, dim: int, *, order: Literal["reverse", "random"] = "reverse") -> None:
        super().__init__()
        perm = torch.randperm(dim) if order == "random" else torch.arange(dim).flip(0)
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z[:, self.inverse_perm], z.new_zeros(z.shape[0])


@register("whiten")
class Whiten(Layer):
    """Data-initialized whitening z = (I + L) (e^d * A (x - loc)) - shift, with A the fixed whitening map.

    ``initialize`` sets ``loc`` to the mean of its batch and A (lower-triangular, positive diagonal) to the
    inverse of the Cholesky factor of its covariance (plus a ridge of ``RIDGE`` times the mean variance, so
    a degenerate direction, such as a column that is an exact function of others, stays invertible): the
    batch then has zero mean and identity covariance, and a flow whose other layers start as the
    identity starts as the maximum-likelihood full-covariance Gaussian of its inputs. Actnorm (Kingma &
    Dhariwal 2018, "Glow", section 3.1) initializes a diagonal map from the data in the same way; this is
    its full-covariance version, the linear step of Gaussianization (Chen & Gopinath 2000, "Gaussianization").

    Trainable through an affine map on the *whitened* side, all zero at first: a strictly-lower-triangular
    L, log scales d and a shift, so weight decay pulls them, like the conditioner weights, towards the
    Gaussian start. On the whitened side an optimizer step of size lr moves every direction by about lr
    of its scale; on the data side it would not: for a near-collinear pair (b = 2a + 1e-3 noise) A holds
    entries of 2000 whose cancellation makes the residual, and a step of 1e-3 on one of them moved the
    residual by 2 of its standard deviations (the first Adam steps cost 2 nats/row). log|det| =
    sum(log diag A) + sum(d); both directions are one pass (the inverse: two triangular solves). The
    model builder puts one after the config's layers of every flow (``model.Flow``), fitted to the rows
    as they leave those layers at initialization; as a YAML layer it whitens whatever reaches it.
    """

    # Relative to the mean variance: invertible, yet far below a real residual variance (b = 2a + 1e-3 noise
    # leaves 2.5e-7 of it; a ridge of 1e-9 cost that pair's Gaussian 0.004 nats/row). An exactly degenerate
    # direction is scaled by up to 1e6, which float32 rounding noise (6e-8) keeps near unit scale.
    RIDGE = 1e-12

    # buffers: the Gaussian start, fixed after ``initialize``
    loc: Tensor
    factor: Tensor
    eye: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("factor", torch.eye(dim))
        self.register_buffer("eye", torch.eye(dim), persistent=False)
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def initialize(self, x: Tensor, active: Tensor | None = None) -> None:
        """Whiten the features of ``x`` marked in ``active`` (default: all); the others pass unchanged."""
        if x.shape[0] < 2 or x.shape[1] == 0:  # too few rows, or no continuous feature
            return
        loc, factor = gaussian_whitening(x, active)
        self.loc.copy_(loc)
        self.factor.copy_(factor)

    def _mix(self) -> Tensor:
        return torch.tril(self.lower, -1) + self.eye

    def _log_det(self) -> Tensor:
        return (torch.diagonal(self.factor).log() + self.log_scale).sum()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        whitened = (x - self.loc) @ self.factor.T
        z = (whitened * self.log_scale.exp()) @ self._mix().T - self.shift
        return z, self._log_det().expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        scaled = torch.linalg.solve_triangular(self._mix(), (z + self.shift).T, upper=False, unitriangular=True)
        whitened = scaled.T * (-self.log_scale).exp()
        x = torch.linalg.solve_triangular(self.factor, whitened.T, upper=False).T + self.loc
        return x, -self._log_det().expand(z.shape[0])


@register("residualize")
class Residualize(Layer):
    """Replace each feature that the features before it nearly determine by its regression residual:
    z = loc + M (x - loc), M lower-triangular, the identity except in the rows of such features.

    ``initialize`` takes the covariance S of its batch and its Cholesky factor L (S = L L^T). Feature j
    keeps only ``L_jj^2 / S_jj`` of its variance once the features before it are known (1 - R^2 of its
    regression on them); below FLOOR, row j of M becomes sqrt(S_jj) times row j of L^-1: the residual of
    that regression, scaled back to the feature's own variance. Other rows stay rows of the identity, so
    ordinary columns reach the conditioners as they are, while b = 2a + 1e-3 noise (1 - R^2 = 2.5e-7)
    reaches them as the noise, at the scale of b: an autoregressive conditioner can use it, and the
    whitening at the end of the flow is well conditioned (it scales no direction by more than about
    1 / sqrt(FLOOR), where it would scale that residual by 2000 and amplify every optimizer step of the
    layers before it: the first steps of a MAF cost 2 nats/row). Regression residuals are the rows of the
    whitening of Gaussianization (Chen & Gopinath 2000); here only the near-determined ones are taken.
    Fixed after ``initialize``, no parameters; log|det| = sum(log M_jj); both directions one pass.

    The model builder puts one right after the preprocessing of every flow (``model.Flow``).
    """

    FLOOR = 0.1  # of a feature's variance left once the features before it are known (R^2 > 0.9)

    # buffers, set by ``initialize``
    loc: Tensor
    matrix: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))

    @torch.no_grad()
    def initialize(self, x: Tensor, active: Tensor | None = None) -> None:
        """Residualize among the features of ``x`` marked in ``active`` (default: all)."""
        if x.shape[0] < 2 or x.shape[1] == 0:  # too few rows, or no continuous feature
            return
        loc, whitening = gaussian_whitening(x, active)
        variance = x.double().var(0, unbiased=False)
        if active is not None:  # the others keep all their variance: never near-determined
            variance = torch.where(active, variance, torch.diagonal(whitening).double() ** -2)
        kept = (torch.diagonal(whitening).double() ** -2) / variance.clamp_min(torch.finfo(torch.float64).tiny)
        near = kept < self.FLOOR
        residual = whitening.double() * variance.sqrt()[:, None]
        eye = torch.eye(len(loc), dtype=torch.float64, device=x.device)
        self.loc.copy_(loc)
        self.matrix.copy_(torch.where(near[:, None], residual, eye))

    def _log_det(self) -> Tensor:
        return torch.diagonal(self.matrix).log().sum()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return (x - self.loc) @ self.matrix.T + self.loc, self._log_det().expand(x.shape[0])

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.linalg.solve_triangular(self.matrix, (z - self.loc).T, upper=False).T + self.loc
        return x, -self._log_det().expand(z.shape[0])


class GaussianBaseline(nn.Module):
    """The maximum-likelihood full-covariance Gaussian of a batch (``initialize``): ``forward`` gives its
    log-density, the baseline a fitted flow is compared with (``model.Flow.gaussian_log_prob``). Fixed
    buffers, no parameters."""

    loc: Tensor
    factor: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("factor", torch.eye(dim))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        if x.shape[0] >= 2:
            loc, factor = gaussian_whitening(x)
            self.loc.copy_(loc)
            self.factor.copy_(factor)

    def forward(self, x: Tensor) -> Tensor:
        z = (x - self.loc) @ self.factor.T
        log_det = torch.diagonal(self.factor).log().sum()
        return -0.5 * (z.pow(2).sum(1) + z.shape[1] * math.log(2 * math.pi)) + log_det


def gaussian_whitening(x: Tensor, active: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(mean, inverse Cholesky factor of the covariance + ridge) of the rows of ``x``, computed in float64
    and returned in ``x``'s dtype. The ridge grows tenfold until the factorization succeeds. With a boolean
    ``active`` mask, of those features only: the others get mean 0 and rows and columns of the identity."""
    if active is not None and not bool(active.all()):
        index = active.nonzero().flatten()
        loc, factor = torch.zeros(x.shape[1], dtype=x.dtype), torch.eye(x.shape[1], dtype=x.dtype)
        if len(index):
            sub_loc, sub_factor = gaussian_whitening(x[:, index])
            loc[index] = sub_loc
            factor[index[:, None], index[None, :]] = sub_factor
        return loc, factor
    rows = x.double()
    mean = rows.mean(0)
    centred = rows - mean
    cov = centred.T @ centred / rows.shape[0]
    scale = float(torch.diagonal(cov).mean()) or 1.0
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    ridge = Whiten.RIDGE * scale
    for _ in range(20) if torch.isfinite(cov).all() else ():
        chol, info = torch.linalg.cholesky_ex(cov + ridge * eye)
        if int(info) == 0:
            inverse = torch.linalg.solve_triangular(chol, eye, upper=False)
            return mean.to(x.dtype), torch.tril(inverse).to(x.dtype)
        ridge *= 10
    # Overflowing inputs: no usable Gaussian; start from the identity as the other layers do.
    return torch.zeros_like(mean).to(x.dtype), eye.to(x.dtype)
