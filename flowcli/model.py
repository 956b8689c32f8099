"""Schema + flow + base: the model behind every command.

``Flow`` is the torch module (tensors in, tensors out); ``Model`` wraps it with the schema and speaks
DataFrames, in batches so memory stays bounded whatever the table size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .bases import Base, build_base
from .columns import Column
from .config import Config
from .errors import ConfigError, DataError
from .layers import Layer, build_layer
from .layers.linear import GaussianBaseline, Residualize, Whiten
from .quantiles import StoredQuantiles
from .schema import OnInvalid, Schema

SCORING_BATCH = 65536
# Points of the lattice rule that integrates the density over the unit cell of a row's discrete values
# (see ``Model.log_prob_features``). Scoring a table with discrete columns costs this many flow passes.
CELL_POINTS = 16


def cell_lattice(points: int, dims: int) -> np.ndarray:
    """A centred rank-1 (Korobov) lattice of ``points`` offsets in [-1/2, 1/2)^dims: the midpoint rule
    in one dimension, an even spread in more (Sloan & Joe 1994, "Lattice Methods for Multiple Integration")."""
    generator = [pow(3, i, points) if points > 1 else 0 for i in range(dims)]
    j = np.arange(points)[:, None]
    return ((j * np.asarray(generator)[None, :] + 0.5) / points) % 1.0 - 0.5


class Flow(nn.Module):
    """preprocessing -> residualize -> layers -> whitening -> (bridge) -> base.  forward: data -> latent.

    Two data-initialized linear layers frame the config's layers in every flow (``initialize``):

    - ``residualize`` (``layers.linear.Residualize``) first: a feature that the features before it
      nearly determine (R^2 > 0.9: a near-collinear pair, b = 2a + 1e-3 noise) is replaced by its
      regression residual, and nothing else moves. The conditioners see the columns as they are, and the
      whitening after them is well conditioned, so an optimizer step cannot be amplified 2000-fold.
    - ``whiten`` (``layers.linear.Whiten``) last: fitted to the rows as they leave the config's layers at
      initialization, so that the flow starts as the maximum-likelihood full-covariance Gaussian of the
      preprocessed rows (exactly, when the config's layers start as the identity or an affine map).

    The whitening sits after the config's layers rather than before them because it shears the
    coordinates the conditioners see: on penguin_measures.csv (3 species) whitening first cost the
    default and maf about 0.3 nats/row on held-out rows. ``gaussian_log_prob`` scores the maximum-likelihood
    Gaussian (kept in ``baseline``), the figure a fit is compared with.
    """

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__()
        dim = schema.dim
        self.preprocess = schema.preprocessing()
        self.residualize = Residualize(dim)
        layers: list[Layer] = []
        for i, spec in enumerate(config.layers):
            try:
                layers.append(build_layer(spec.type, dim, i, spec.options))
            except ConfigError as exc:  # a layer's own range check: say which layer
                raise ConfigError(f"layers[{i}].{exc}") from None
        self.layers = nn.ModuleList(layers)
        self.whiten = Whiten(dim)
        self.baseline = GaussianBaseline(dim)
        self.base: Base = build_base(config.base.type, dim, config.base.options)
        self.bridge = self.base.bridge()

    @property
    def steps(self) -> Sequence[Layer]:
        """The config's layers in order, typed: iterating ``self.layers`` gives plain ``nn.Module``s."""
        return cast("Sequence[Layer]", self.layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, ladj = self.preprocess(x)
        for layer in (self.residualize, *self.steps, self.whiten, *([self.bridge] if self.bridge else [])):
            z, step = layer(z)
            ladj = ladj + step
        return z, ladj

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        ladj = z.new_zeros(z.shape[0])
        for layer in reversed((self.residualize, *self.steps, self.whiten, *([self.bridge] if self.bridge else []))):
            z, step = layer.inverse(z)
            ladj = ladj + step
        x, step = self.preprocess.inverse(z)
        return x, ladj + step

    def log_prob(self, x: Tensor) -> Tensor:
        z, ladj = self(x)
        return self.base.log_prob(z) + ladj

    def gaussian_log_prob(self, x: Tensor) -> Tensor:
        """log-density of the maximum-likelihood full-covariance Gaussian of the preprocessed training rows,
        with the preprocessing's log|det|: a density in the same units as ``log_prob``."""
        y, ladj = self.preprocess(x)
        u, step = self.residualize(y)
        return self.baseline(u) + ladj + step

    @torch.no_grad()
    def initialize(self, x: Tensor, gaussian_rows: Tensor | None = None) -> None:
        """Fit the residualizing and the Gaussian to ``gaussian_rows`` (default ``x``), run the data-dependent
        initialization of each layer on the batch ``x`` as it reaches that layer, then fit the whitening
        to ``gaussian_rows`` as they leave the layers."""
        # Categories and missingness indicators are left out of the residualizing and the whitening: a
        # Gaussian spreads their mass beyond the outermost cells, and starting there a MAF learnt the
        # probabilities of a two-column categorical table 2-5x worse (total variation of its samples 0.10 and
        # 0.17 after 30 epochs, seeds 0 and 1; 0.02 and 0.04 without). The comparison baseline is the full
        # Gaussian all the same.
        continuous = ~self.preprocess.integrate
        rows = self.preprocess(x if gaussian_rows is None else gaussian_rows)[0]
        self.residualize.initialize(rows, continuous)
        rows = self.residualize(rows)[0]
        self.baseline.initialize(rows)
        z, _ = self.residualize(self.preprocess(x)[0])
        for layer in self.steps:
            layer.initialize(z)
            z, _ = layer(z)
        out = []
        for part in rows.split(SCORING_BATCH):
            for layer in self.steps:
                part, _ = layer(part)
            out.append(part)
        self.whiten.initialize(torch.cat(out), continuous)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        x, _ = self.inverse(self.base.sample(n, generator))
        return x


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _finite(values: np.ndarray, row_offset: int, what: str) -> np.ndarray:
    """``values`` unchanged, or a DataError naming the first row whose result overflowed: a latent
    or decoded row of inf/NaN cannot be mapped back, so it is refused rather than written."""
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        row = row_offset + int(np.argmax(bad)) + 1
        raise DataError(
            f"row {row}: the {what} values overflow float64 (the row is too far outside the training range)"
        )
    return values


class Model:
    """A fitted density over a table: ``log_prob``, ``sample``, ``encode`` and ``decode`` on DataFrames.

    Models are trained in float32 for speed and evaluated in float64 by default (``load_model``), so
    scores, samples and ``decode(encode(x))`` round trips carry no float32 rounding into the output.
    """

    def __init__(self, schema: Schema, config: Config, flow: Flow, info: dict[str, Any] | None = None) -> None:
        self.schema, self.config, self.flow = schema, config, flow
        self.info = info or {}
        self.train_state: Any = None  # set by fit: a trainstate.TrainState, saved so the run can resume
        self.latent_schema = Schema([Column(n, "continuous", "float64") for n in self.latent_names])
        self.flow.eval()

    @property
    def device(self) -> torch.device:
        return self.flow.base._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.flow.base._anchor.dtype

    @property
    def latent_names(self) -> list[str]:
        return [f"z{i}" for i in range(self.schema.dim)]

    def to(self, device: torch.device | str) -> Model:
        self.flow.to(device)
        return self

    def save(self, path: str | Path) -> None:
        """Write the model to a checkpoint (atomically; safetensors + JSON, never pickle), which
        ``flowcli.load`` and every command read."""
        save_model(self, str(path))

    def _tensor(self, matrix: np.ndarray) -> Tensor:
        return torch.as_tensor(matrix, dtype=self.dtype).to(self.device)

    def _map(self, matrix: np.ndarray, fn: Any, width: int) -> np.ndarray:
        out = np.empty((len(matrix), width))
        with torch.inference_mode():
            for sl in _batches(len(matrix), SCORING_BATCH):
                result = fn(self._tensor(matrix[sl]))
                out[sl] = result.double().cpu().numpy().reshape(sl.stop - sl.start, width)
        return out

    def log_prob(self, frame: pd.DataFrame, row_offset: int = 0, on_invalid: OnInvalid = "error") -> np.ndarray:
        """Natural log of each row's probability: the density of its continuous values (in the units of
        their columns) times the probability of its discrete values (see the README, "What logprob means").

        ``on_invalid='neg-inf'`` scores rows with unparseable values or unseen categories as -inf instead
        of raising an error that names the column, the value and the row.
        """
        matrix, log_mass = self.schema.to_features(frame, row_offset, on_invalid)
        values = self.log_prob_features(matrix) + log_mass
        # Never NaN: a row so far outside the training range that float64 overflows on the way (say
        # 1e300) has a density that underflows to 0, and is scored -inf, the most anomalous score.
        values[~np.isfinite(values)] = -np.inf
        return values

    def log_prob_features(self, matrix: np.ndarray) -> np.ndarray:
        """``log_prob`` of rows already encoded by ``Schema.to_features``.

        Without categorical features this is the flow's log-density (integers: at the centre of their
        unit cell, the midpoint rule, accurate because a density over many integers is smooth across
        neighbouring cells). With categories or missingness indicators, their probability is the integral
        of the flow's density over their unit cell, the same cell that sampling maps to that value,
        computed with a ``CELL_POINTS``-point lattice rule over the cells (a log-mean-exp of the density
        at the lattice points). The midpoint alone (density at the cell centre times the trained width)
        proved a poor estimate for categories: a flow does not learn a flat density inside a cell, and on
        a toy table of two categorical columns it was off by up to 2x per cell.
        """
        pre = self.flow.preprocess
        discrete = pre.integrate.cpu().numpy()
        if not discrete.any():
            return self._map(matrix, self.flow.log_prob, 1)[:, 0]
        lattice = cell_lattice(CELL_POINTS, int(discrete.sum()))
        scores = np.empty((CELL_POINTS, len(matrix)))
        for j, offset in enumerate(lattice):
            shifted = matrix.copy()
            shifted[:, discrete] += offset
            # The flow's log-density includes log(width) of the training cells; the integral is over unit cells.
            scores[j] = self._map(shifted, self.flow.log_prob, 1)[:, 0] - pre.log_width_integrated
        top = scores.max(axis=0)
        safe = np.where(np.isfinite(top), top, 0.0)
        return safe + np.log(np.exp(scores - safe).mean(axis=0))

    def logprob_threshold(self, level: float, frame: pd.DataFrame) -> np.ndarray:
        """Per row of ``frame``: the ``level``-quantile of ``logprob`` over the held-out training rows with
        the same missing cells (or the nearest such pattern stored; ``quantiles.py``), interpolated."""
        return StoredQuantiles.from_info(self.info).thresholds(level, frame)

    def logprob_percentile(self, logprob: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
        """Percentile (0-100) of each ``logprob`` (the scores of ``frame``'s rows) among the held-out
        training rows with the same missing cells (as ``logprob_threshold``), interpolated."""
        return StoredQuantiles.from_info(self.info).percentile(logprob, frame)

    def encode(self, frame: pd.DataFrame, row_offset: int = 0) -> pd.DataFrame:
        """Rows -> latent columns ``z0..z{k-1}`` (the base distribution's space). Discrete values map
        from the centre of their cell; missing values from the imputed stand-in."""
        matrix, _ = self.schema.to_features(frame, row_offset)
        z = _finite(self._map(matrix, lambda x: self.flow(x)[0], self.schema.dim), row_offset, "latent")
        return pd.DataFrame(z, columns=self.latent_names)

    def decode(self, frame: pd.DataFrame, row_offset: int = 0) -> pd.DataFrame:
        """Latent columns ``z0..z{k-1}`` -> rows with the original column names and dtypes."""
        z, _ = self.latent_schema.to_features(frame, row_offset)
        x = _finite(self._map(z, lambda t: self.flow.inverse(t)[0], self.schema.dim), row_offset, "decoded")
        return self.schema.to_frame(x)

    def sample(self, n: int, seed: int | None = None) -> pd.DataFrame:
        """``n`` synthetic rows with the training columns, order and dtypes."""
        return (
            pd.concat(list(self.sample_batches(n, seed)), ignore_index=True)
            if n
            else self.schema.to_frame(np.zeros((0, self.schema.dim)))
        )

    def sample_batches(self, n: int, seed: int | None = None, batch: int = SCORING_BATCH) -> Iterator[pd.DataFrame]:
        generator = torch.Generator(device=self.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        with torch.inference_mode():
            for sl in _batches(n, batch):
                x = self.flow.sample(sl.stop - sl.start, generator)
                yield self.schema.to_frame(x.double().cpu().numpy())


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("flowcli", "torch", "numpy", "pandas", "pyarrow", "safetensors"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "unknown"
    import platform

    versions["python"] = platform.python_version()
    return versions


# Wall-clock times (a fit's total, each epoch's) differ between two runs of the same seeded fit. They are
# kept out of checkpoints, so that such runs write byte-identical files; the metrics file beside the
# checkpoint has them (``fitting.fit_seconds`` reads them back for ``inspect``).
RUN_TIMES = ("fit_seconds", "seconds")


def without_times(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without ``RUN_TIMES``, also in its lists of epochs (``metrics``, ``history``)."""
    kept = {k: v for k, v in record.items() if k not in RUN_TIMES}
    for key in ("metrics", "history"):
        if isinstance(kept.get(key), list):
            kept[key] = [without_times(epoch) if isinstance(epoch, dict) else epoch for epoch in kept[key]]
    return kept


def save_model(model: Model, path: str) -> None:
    """Write the model atomically: config, schema, training info and versions beside the weights. The
    same model gives the same bytes: nothing that depends on the run's timing is written."""
    from . import checkpoint

    header = {
        "config": model.config.to_dict(),
        "schema": model.schema.to_dict(),
        "info": without_times(model.info),
        "versions": package_versions(),
    }
    # Weights are trained in float32; storing them so halves the file without losing anything.
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in model.flow.state_dict().items()}
    if model.train_state is not None:
        state, state_tensors = model.train_state.pack()
        header["train_state"] = without_times(state)
        tensors.update(state_tensors)
    checkpoint.save(path, header, tensors)


def complete_weights(flow: Flow, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` plus the MADE variable orders that checkpoints written before flowcli saved them lack:
    taken from the freshly built ``flow``, which is right for every order the config determines
    (``alternate``); ``check_orders`` catches the ``random`` ones that cannot be recovered."""
    missing = {k: v for k, v in flow.state_dict().items() if k.endswith("made.order") and k not in tensors}
    return {**tensors, **missing}


def check_orders(flow: Flow, source: str) -> None:
    from .errors import CheckpointError
    from .layers.nets import MADE

    if not all(m.masks_match_order() for m in flow.modules() if isinstance(m, MADE)):
        raise CheckpointError(
            f"{source}: an autoregressive layer's variable order does not match its masks (a "
            "checkpoint of an `order: random` layer written before flowcli saved the order); refit it"
        )


def load_weights(flow: Flow, tensors: dict[str, Tensor], source: str) -> None:
    """Load a checkpoint's weights into ``flow`` and check that its autoregressive orders are consistent."""
    flow.load_state_dict(complete_weights(flow, tensors))
    check_orders(flow, source)


def load_model(path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> Model:
    """Rebuild a model from a checkpoint file alone (never unpickles)."""
    from . import checkpoint
    from .config import parse_config
    from .errors import CheckpointError, ConfigError
    from .trainstate import split_tensors

    header, tensors = checkpoint.load(path)
    tensors, _ = split_tensors(tensors)  # the training state is only read by `fit --resume`
    try:
        config = parse_config(header["config"])
        schema = Schema.from_dict(header["schema"])
        flow = Flow(schema, config)
        load_weights(flow, tensors, path)
    except (ConfigError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: checkpoint does not describe a valid model ({exc})") from None
    return Model(schema, config, flow.to(device=device, dtype=dtype), header.get("info", {}))
