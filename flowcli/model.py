"""Schema + flow + base: the model behind every command.

``Flow`` is the torch module (tensors in, tensors out); ``Model`` wraps it with the schema and speaks
DataFrames, in batches so memory stays bounded whatever the table size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias, cast

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .bases import Base, build_base
from .columns import Column
from .conditional import ConditionalNet, layout_of
from .config import Config
from .discrete import DiscreteModel
from .errors import ConfigError, DataError, shown
from .layers import Layer, build_layer
from .layers.context import ContextAffine
from .layers.linear import GaussianBaseline, Residualize, Whiten
from .quantiles import StoredQuantiles
from .schema import OnInvalid, Schema, redraw_outside, text_labels

SCORING_BATCH = 65536
# Rows per pass when scoring on a CPU: the flow's intermediate tensors then stay in cache. The default spline
# flow on 16 columns scores 125,000-130,000 rows/s per thread in batches of 2,048-8,192 rows and 75,000-81,000 in
# batches of 65,536 (memory-bound); a GPU wants the large batches.
CPU_SCORING_BATCH = 4096


def scoring_batch(device: torch.device) -> int:
    return CPU_SCORING_BATCH if device.type == "cpu" else SCORING_BATCH


GivenLike: TypeAlias = Mapping[str, Any] | pd.DataFrame


class Flow(nn.Module):
    """The density of a row: log p(row) = log P(d) + log p(c | d).  forward: data -> latent.

    d is the row's discrete part (its categories, and the state of each numeric column with missing values
    or atoms: a value, missing, or which atom), modelled exactly by ``discrete`` (``discrete.DiscreteModel``,
    an autoregressive categorical network). c is its continuous part, the density of a flow over the
    continuous features conditioned on d (the one-hot codes are the *context*):

        preprocessing -> residualize -> condition -> layers -> whitening -> (bridge) -> base

    ``condition`` (``layers.context.ContextAffine``, only with discrete features) shifts and scales each
    continuous feature by d, and the config's conditional layers (coupling, autoregressive) take d as an
    input of their conditioners; other layers are the same map for every d. Two data-initialized linear
    layers frame the config's layers (``initialize``):

    - ``residualize`` (``layers.linear.Residualize``) first: a feature that the features before it
      nearly determine (R^2 > 0.9: a near-collinear pair, b = 2a + 1e-3 noise) is replaced by its
      regression residual, and nothing else moves. The conditioners see the columns as they are, and the
      whitening after them is well conditioned, so an optimizer step cannot be amplified 2000-fold.
    - ``whiten`` (``layers.linear.Whiten``) last: fitted to the rows as they leave the config's layers at
      initialization, so that the flow starts as the maximum-likelihood full-covariance Gaussian of the
      preprocessed rows (exactly, when the config's layers start as the identity or an affine map), and
      the discrete part as fitted on its own beforehand (``train.Trainer``).

    The whitening sits after the config's layers rather than before them because it shears the
    coordinates the conditioners see: on penguin_measures.csv (3 species) whitening first cost the
    default and maf about 0.3 nats/row on held-out rows. ``gaussian_log_prob`` scores that start (the
    Gaussian kept in ``baseline``, and the discrete part), the figure a fit is compared with.

    Beside the joint density, ``conditional`` (``conditional.ConditionalNet``) answers conditional questions
    (p(targets | observed) for any columns, imputation); it is fitted on its own and shares only the
    preprocessing with the joint flow.

    The latent space has one coordinate per feature, in feature order: a continuous feature's is the
    flow's output, a discrete feature's the normal quantile of its code's conditional CDF interval
    (``DiscreteModel.encode``), so sampling is decoding a standard draw.
    """

    _anchor: Tensor  # a buffer that gives the model's device and dtype
    discrete_index: Tensor
    continuous_index: Tensor

    def __init__(self, schema: Schema, config: Config) -> None:
        super().__init__()
        specs = schema.feature_specs()
        self.dim = len(specs)
        discrete = [i for i, spec in enumerate(specs) if spec.levels > 0]
        continuous = [i for i, spec in enumerate(specs) if spec.levels == 0]
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)
        self.register_buffer("discrete_index", torch.tensor(discrete, dtype=torch.long), persistent=False)
        self.register_buffer("continuous_index", torch.tensor(continuous, dtype=torch.long), persistent=False)
        self.discrete = DiscreteModel([specs[i].levels for i in discrete]) if discrete else None
        context = self.discrete.width if self.discrete is not None else 0
        dim = len(continuous)
        self.preprocess = schema.preprocessing()
        self.residualize = Residualize(dim)
        self.condition = ContextAffine(dim, context) if context and dim else None
        layers: list[Layer] = []
        for i, spec in enumerate(config.layers):
            try:
                # Built even without continuous features (then for one, and dropped), so that a config's
                # mistakes are reported whatever the table.
                layers.append(build_layer(spec.type, max(dim, 1), i, spec.options, context))
            except ConfigError as exc:  # a layer's own range check: say which layer
                raise ConfigError(f"layers[{i}].{exc}") from None
        self.layers = nn.ModuleList(layers if dim else [])
        self.whiten = Whiten(dim)
        self.baseline = GaussianBaseline(dim)
        try:
            self.base: Base = build_base(config.base.type, dim, config.base.options)
        except ConfigError as exc:  # the base's own range check: say it is the base's option
            raise ConfigError(str(exc) if str(exc).startswith("base.") else f"base.{exc}") from None
        self.bridge = self.base.bridge()
        # The conditional questions' own network (``conditional.py``), fitted after the discrete part. Built on
        # a forked random stream: the joint flow's training draws what it would draw without it.
        with torch.random.fork_rng(devices=[]):
            self.conditional = ConditionalNet(layout_of(schema))

    @property
    def steps(self) -> Sequence[Layer]:
        """The config's layers in order, typed: iterating ``self.layers`` gives plain ``nn.Module``s."""
        return cast("Sequence[Layer]", self.layers)

    def _chain(self) -> list[Layer]:
        """The continuous part's layers after the preprocessing, in the forward direction."""
        framed = [self.residualize, *([self.condition] if self.condition else []), *self.steps, self.whiten]
        return framed + ([self.bridge] if self.bridge else [])

    def codes(self, x: Tensor) -> Tensor:
        """The integer codes (n, discrete features) of feature rows."""
        codes = self._split(x)[0]
        return codes if codes is not None else x.new_zeros(x.shape[0], 0, dtype=torch.long)

    def _split(self, x: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """(codes, their one-hot context, continuous features) of feature rows."""
        if self.discrete is None:
            return None, None, x  # every feature is continuous
        codes = x[:, self.discrete_index].floor().long().clamp_min(0)
        codes = torch.minimum(codes, (self.discrete.offsets[1:] - self.discrete.offsets[:-1]) - 1)
        return codes, self.discrete.one_hot(codes), x[:, self.continuous_index]

    def _continuous(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        z, ladj = self.preprocess(x)
        for layer in self._chain():
            z, step = layer(z, context) if layer.conditional else layer(z)
            ladj = ladj + step
        return z, ladj

    def _continuous_inverse(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        ladj = z.new_zeros(z.shape[0])
        for layer in reversed(self._chain()):
            # A conditional layer's inverse takes the context too (``Layer.conditional``).
            z, step = cast(Any, layer).inverse(z, context) if layer.conditional else layer.inverse(z)
            ladj = ladj + step
        x, step = self.preprocess.inverse(z)
        return x, ladj + step

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Feature rows -> latent rows, and the log|det| of the continuous part's map."""
        codes, context, continuous = self._split(x)
        z_c, ladj = self._continuous(continuous, context)
        z = x.new_empty(x.shape[0], self.dim)
        z[:, self.continuous_index] = z_c
        if self.discrete is not None and codes is not None:
            z[:, self.discrete_index] = self.discrete.encode(codes)
        return z, ladj

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Latent rows -> feature rows (discrete features as code + 1/2), and the continuous log|det|."""
        codes = self.discrete.decode(z[:, self.discrete_index]) if self.discrete is not None else None
        return self.inverse_given_codes(z[:, self.continuous_index], codes)

    def inverse_given_codes(self, z_c: Tensor, codes: Tensor | None) -> tuple[Tensor, Tensor]:
        """The continuous part's latent rows ``z_c`` -> feature rows whose discrete part is ``codes`` (n, discrete
        features; None without any), and the continuous log|det|: a draw of p(c | d) from a base draw."""
        x = z_c.new_empty(z_c.shape[0], self.dim)
        context = None
        if self.discrete is not None and codes is not None:
            context = self.discrete.one_hot(codes).to(z_c.dtype)
            x[:, self.discrete_index] = codes.to(z_c.dtype) + 0.5
        x_c, ladj = self._continuous_inverse(z_c, context)
        x[:, self.continuous_index] = x_c
        return x, ladj

    def log_prob(self, x: Tensor) -> Tensor:
        codes, context, continuous = self._split(x)
        z, ladj = self._continuous(continuous, context)
        out = self.base.log_prob(z) + ladj
        if self.discrete is not None and codes is not None:
            out = out + self.discrete.log_prob(codes, context)
        return out

    def gaussian_log_prob(self, x: Tensor) -> Tensor:
        """log-probability under the start: the maximum-likelihood full-covariance Gaussian of the preprocessed
        continuous features (with the preprocessing's log|det|: a density in the same units as ``log_prob``)
        times the discrete part's probability. The discrete part is fitted before the flow and then fixed
        (``train.Trainer``), so the start and the fitted flow share it and differ in the continuous part
        only, the part this baseline is there to judge."""
        codes, _, continuous = self._split(x)
        y, ladj = self.preprocess(continuous)
        u, step = self.residualize(y)
        out = self.baseline(u) + ladj + step
        if self.discrete is not None and codes is not None:
            out = out + self.discrete.log_prob(codes)
        return out

    @torch.no_grad()
    def initialize(self, x: Tensor, gaussian_rows: Tensor | None = None) -> None:
        """Fit the discrete part's frequencies, the residualizing and the Gaussian to ``gaussian_rows``
        (default ``x``), run the data-dependent initialization of each layer on the batch ``x`` as it
        reaches that layer, then fit the whitening to ``gaussian_rows`` as they leave the layers."""
        gaussian_rows = x if gaussian_rows is None else gaussian_rows
        codes, context_all, continuous_all = self._split(gaussian_rows)
        if self.discrete is not None and codes is not None:
            self.discrete.initialize(codes)
        rows = self.preprocess(continuous_all)[0]
        self.residualize.initialize(rows)
        rows = self.residualize(rows)[0]
        self.baseline.initialize(rows)
        _, context, continuous = self._split(x)
        z, _ = self.residualize(self.preprocess(continuous)[0])
        for layer in self._conditioned_steps():
            layer.initialize(z)
            z, _ = layer(z, context) if layer.conditional else layer(z)
        out = []
        for index in torch.arange(len(rows), device=rows.device).split(scoring_batch(rows.device)):
            part, part_context = rows[index], None if context_all is None else context_all[index]
            for layer in self._conditioned_steps():
                part, _ = layer(part, part_context) if layer.conditional else layer(part)
            out.append(part)
        self.whiten.initialize(torch.cat(out))

    def _conditioned_steps(self) -> list[Layer]:
        return [*([self.condition] if self.condition else []), *self.steps]

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws of the latent distribution: the base for the continuous coordinates, N(0, 1) for the
        discrete ones (see ``DiscreteModel``)."""
        z = self._anchor.new_empty(n, self.dim)
        z[:, self.continuous_index] = self.base.sample(n, generator)
        if len(self.discrete_index):
            shape = (n, len(self.discrete_index))
            z[:, self.discrete_index] = torch.randn(shape, generator=generator, device=z.device, dtype=z.dtype)
        return z

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        x, _ = self.inverse(self.sample_latent(n, generator))
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
        return self.flow._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.flow._anchor.dtype

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
            for sl in _batches(len(matrix), scoring_batch(self.device)):
                result = fn(self._tensor(matrix[sl]))
                out[sl] = result.double().cpu().numpy().reshape(sl.stop - sl.start, width)
        return out

    def log_prob(
        self,
        frame: pd.DataFrame,
        row_offset: int = 0,
        on_invalid: OnInvalid = "error",
        target: str | Sequence[str] | None = None,
    ) -> np.ndarray:
        """Natural log of each row's probability: the density of its continuous values (in the units of
        their columns) times the probability of its discrete values (see the README, "What logprob means").

        ``on_invalid='neg-inf'`` scores rows with unparseable values or unseen categories as -inf instead
        of raising an error that names the column, the value and the row.

        ``target`` (a list of columns, or one string ``"a,b"`` as on the command line): log p(the target
        columns | the row's other known cells), from the network of conditional
        questions (``conditional.py``); a row whose target cells are all empty gets NaN. A frame lacking
        some of the model's columns is scored on the columns it has (the others marginalised out), by the
        same network; a frame with every column, by the joint flow. Rows whose known cells are all labels
        (categories, atoms) get the joint's exact discrete marginals instead (``joint_given.log_marginal``).
        """
        frame = text_labels(frame)
        needed = self.schema.read_names
        if target is not None:
            from .questions import parse_targets

            # One string is the command line's COL[,COL...]; a list names one column per item.
            target = parse_targets(
                [target] if isinstance(target, str) else [str(t) for t in target], split=isinstance(target, str)
            )
        if target is not None or any(name not in frame.columns for name in needed):
            from . import questions

            return questions.log_prob(self, frame, target, row_offset, on_invalid)
        matrix, log_mass = self.schema.to_features(frame, row_offset, on_invalid)
        values = self.log_prob_features(matrix) + log_mass
        # Never NaN: a row so far outside the training range that float64 overflows on the way (say
        # 1e300) has a density that underflows to 0, and is scored -inf, the most anomalous score.
        values[~np.isfinite(values)] = -np.inf
        return values

    def log_prob_features(self, matrix: np.ndarray) -> np.ndarray:
        """``log_prob`` of rows already encoded by ``Schema.to_features``: one pass of the discrete model
        and one of the flow (``Flow.log_prob``)."""
        return self._map(matrix, self.flow.log_prob, 1)[:, 0]

    def absent_cells(self, frame: pd.DataFrame) -> np.ndarray:
        """Per row of ``frame``: which of ``schema.pattern_columns`` have no continuous value (missing, or
        on an atom): the row's pattern (``quantiles.py``)."""
        return self.schema.absent_cells(self.schema.to_features(text_labels(frame), on_invalid="neg-inf")[0])

    def logprob_threshold(self, level: float, frame: pd.DataFrame, absent: np.ndarray | None = None) -> np.ndarray:
        """Per row of ``frame``: the ``level``-quantile of ``logprob`` over the reference rows with the same
        absent cells (or the nearest such pattern stored; ``quantiles.py``), interpolated. ``absent``: the
        frame's ``absent_cells`` when already known."""
        absent = self.absent_cells(frame) if absent is None else absent
        return StoredQuantiles.from_info(self.info).thresholds(level, absent)

    def logprob_percentile(
        self, logprob: np.ndarray, frame: pd.DataFrame, absent: np.ndarray | None = None
    ) -> np.ndarray:
        """Percentile (0-100) of each ``logprob`` (the scores of ``frame``'s rows) among the reference
        rows with the same absent cells (as ``logprob_threshold``), interpolated."""
        absent = self.absent_cells(frame) if absent is None else absent
        return StoredQuantiles.from_info(self.info).percentile(logprob, absent)

    def encode(self, frame: pd.DataFrame, row_offset: int = 0) -> pd.DataFrame:
        """Rows -> latent columns ``z0..z{k-1}``, one per feature: a continuous feature's coordinate in the
        base distribution's space (an absent value, missing or on an atom, from its stand-in), a discrete
        feature's the normal quantile of the midpoint of its code's conditional CDF interval
        (``DiscreteModel.encode``), so ``decode`` gives the row back."""
        frame = text_labels(frame)
        matrix, log_mass = self.schema.to_features(frame, row_offset)
        outside = np.isneginf(log_mass)
        if outside.any():  # the features hold a stand-in there, whose latent would not decode to the row
            at = int(np.argmax(outside))
            one = frame.iloc[at : at + 1]
            name = next(
                (
                    c.name
                    for c in self.schema.columns
                    if c.rules.reads_values and np.isneginf(c.encode(one[c.name], 0)[1]).any()
                ),
                None,
            )
            where = (
                f"column {name!r}, row {row_offset + at + 1}: {shown(one[name].iloc[0])}"
                if name
                else f"row {row_offset + at + 1}: a value"
            )
            raise DataError(f"{where} is outside its column's support (probability 0); the row has no latent")
        z = _finite(self._map(matrix, lambda x: self.flow(x)[0], self.schema.dim), row_offset, "latent")
        return pd.DataFrame(z, columns=self.latent_names, index=frame.index)  # row for row: the input's labels

    def decode(self, frame: pd.DataFrame, row_offset: int = 0) -> pd.DataFrame:
        """Latent columns ``z0..z{k-1}`` -> rows with the original column names and dtypes."""
        z, _ = self.latent_schema.to_features(text_labels(frame), row_offset)
        x = _finite(self._map(z, lambda t: self.flow.inverse(t)[0], self.schema.dim), row_offset, "decoded")
        return self.schema.to_frame(x).set_axis(frame.index, axis=0)

    def sample(self, n: int, seed: int | None = None, given: GivenLike | None = None) -> pd.DataFrame:
        """``n`` synthetic rows with the training columns, order and dtypes.

        ``given``: a mapping {column: value} gives ``n`` rows holding those values exactly, the other columns
        drawn from p(others | given) (``conditional.py``: no rejection, so a rare condition costs what a
        common one does); a DataFrame of some of the model's columns gives ``n`` rows per row, in its order
        (an empty cell: not given). Conditional rows are complete (missing values taken as missing at random).
        """
        parts = list(self.sample_batches(n, seed, given=given))
        return pd.concat(parts, ignore_index=True) if parts else self.schema.to_frame(np.zeros((0, self.schema.dim)))

    def impute(
        self, frame: pd.DataFrame, draws: int | None = None, seed: int | None = None, row_offset: int = 0
    ) -> pd.DataFrame:
        """``frame`` with every empty cell of the model's columns filled from its distribution given the row's
        known cells (missing at random): the conditional mean for numbers (on the column's grid), the most
        probable label for categories. Known cells are kept as they are; columns of the model the frame
        lacks are added (filled), other columns of the frame kept. ``draws=K``: K completed copies of every
        row (row i's copies consecutive), each one joint draw of its missing cells, numbered in a last
        column ``_draw`` (1..K): multiple imputation."""
        from . import questions

        if draws is not None and draws < 1:
            raise DataError(f"draws must be at least 1, not {draws}")
        # The means are averages of draws: unseeded, they are still the same every run (seed 0).
        seed = 0 if seed is None and draws is None else seed
        return questions.impute(self, text_labels(frame), draws, self._generator(seed), row_offset)

    def _generator(self, seed: int | None) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        return generator

    def sample_batches(
        self,
        n: int,
        seed: int | None = None,
        batch: int = SCORING_BATCH,
        given: GivenLike | None = None,
        row_offset: int = 0,
    ) -> Iterator[pd.DataFrame]:
        """``sample`` in batches of at most ``batch`` rows; ``row_offset``: the rows of ``given`` before it in
        its file, so that an error names the file's row."""
        generator = self._generator(seed)
        if given is not None:
            from . import questions

            yield from questions.sample_given(self, n, given, generator, batch, row_offset)
            return
        for sl in _batches(n, batch):
            yield self.schema.to_frame(self.draw_rows(sl.stop - sl.start, generator))

    def draw_rows(self, n: int, generator: torch.Generator) -> np.ndarray:
        """``n`` rows drawn from the model, as features in data units, inside the range of its integer and date
        columns (``schema.redraw_outside``)."""
        with torch.inference_mode():

            def draw(count: int) -> np.ndarray:
                return self.flow.sample(count, generator).double().cpu().numpy()

            return redraw_outside(self.schema, draw(n), lambda rows: draw(len(rows)))


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
