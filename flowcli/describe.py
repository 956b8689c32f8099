"""``flowcli inspect``: what a checkpoint holds, as one JSON-able dict and as rich tables.

Reads the checkpoint through ``checkpoint.load`` (the header) and ``model.load_model`` (to count the
parameters of the rebuilt flow), so nothing is ever unpickled and a checkpoint that does not describe
a valid model is reported as such. The schema is shown generically: whatever preprocessing fields a
column carries (mean/std, which hold a numeric column's median and robust scale; categories, bounds or missing
rates as the schema grows) are listed. The training summary includes the fit's warnings (health.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from .quantiles import INFO_KEY, StoredQuantiles

if TYPE_CHECKING:  # rich is imported when a table is drawn, not when the module is
    from rich.table import Table
    from rich.text import Text

TRAINING_KEYS = (
    "epochs_run",
    "best_epoch",
    "best_val_nll",
    "gaussian_val_nll",
    "warnings",
    "fit_seconds",
    "n_train",
    "n_val",
    "seed",
    "device",
)


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def layer_parameters(model: Any) -> list[dict[str, Any]]:
    """One entry per layer of the flow (the config's layers, then a base's bridge if any)."""
    specs = model.config.layers
    rows = []
    bridge = [model.flow.bridge] if model.flow.bridge is not None else []
    for i, layer in enumerate([*model.flow.layers, *bridge]):
        name = getattr(layer, "type_name", type(layer).__name__)
        options = specs[i].options if i < len(specs) and specs[i].type == name else {}
        rows.append({"index": i, "type": name, "options": options, "parameters": _parameters(layer)})
    return rows


def running_versions() -> dict[str, str]:
    from .model import package_versions

    return package_versions()


def describe(path: str) -> dict[str, Any]:
    """Everything ``flowcli inspect`` shows, as plain JSON-able values."""
    from . import checkpoint
    from .fitting import fit_seconds
    from .model import load_model

    header, _ = checkpoint.load(path)
    model = load_model(path, "cpu")
    info = model.info or {}
    metrics = info.get("metrics") or []
    training = {k: info.get(k) for k in TRAINING_KEYS}
    training["fit_seconds"] = fit_seconds(info, path)  # from the metrics file beside it (not in the checkpoint)
    training["final_train_nll"] = metrics[-1].get("train_nll") if metrics else None
    training["max_epochs"] = model.config.training.epochs
    return {
        "checkpoint": path,
        "format_version": header.get("format_version"),
        "config": model.config.to_dict(),
        "columns": model.schema.to_dict(),
        "latent_dim": model.schema.dim,
        "modelled_columns": len(model.schema.modelled),
        "parameters": {
            "total": _parameters(model.flow),
            "base": _parameters(model.flow.base),
            "preprocessing": _parameters(model.flow.preprocess),
            "whitening": _parameters(model.flow.whiten),
            # The discrete part's categorical network and the layer that conditions the flow on it.
            "discrete": _parameters(model.flow.discrete) if model.flow.discrete is not None else 0,
            "conditioning": _parameters(model.flow.condition) if model.flow.condition is not None else 0,
            # The network of conditional questions (``conditional.py``), beside the joint flow.
            "conditional": _parameters(model.flow.conditional),
            "layers": layer_parameters(model),
        },
        "training": training,
        # Extra fit-time facts (e.g. stored logprob quantiles) pass through for machines.
        "info": {k: v for k, v in info.items() if k not in TRAINING_KEYS and k != "metrics"},
        "versions": {"fitted_with": header.get("versions", {}), "running": running_versions()},
    }


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_text(v) for v in value[:6])
        return f"[{shown}{', ...' if len(value) > 6 else ''}]" + (f" ({len(value)})" if len(value) > 6 else "")
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def _preprocessing(column: dict[str, Any]) -> dict[str, Any]:
    """The statistics that apply to a column: unset fields (None, empty, False) are left out, and so are
    the standardizing mean/std of a categorical column, which its encoding does not use."""
    skip = {"name", "role", "dtype", "reason"} | ({"mean", "std"} if column.get("role") == "categorical" else set())
    # The checkpoint's field names (kept by --json) are mean/std; what they hold is a median and a robust scale.
    shown = {"mean": "centre", "std": "scale"}
    # A bound, a statistic or a constant of 0 is a value (low=0 of a count), not an unset field as a missing
    # rate of 0 is.
    meaningful_zero = {"low", "high", "value", "mean", "std", "fill"}

    def unset(key: str, value: Any) -> bool:
        if value is None or value is False or (isinstance(value, (str, list, dict)) and not value):
            return True
        return value == 0 and not isinstance(value, bool) and key not in meaningful_zero

    return {shown.get(k, k): v for k, v in column.items() if k not in skip and not unset(k, v)}


def _row(table: Any, *cells: str, **options: Any) -> None:
    """Add a row of plain text: rich would read "[female, male]" or a column named "[x]" as markup."""
    from rich.text import Text

    table.add_row(*(Text(str(c)) for c in cells), **options)


TRAINING_LABELS = {
    "epochs_run": "epochs run",
    "max_epochs": "max epochs (config)",
    "best_epoch": "best epoch (weights kept)",
    "best_val_nll": "best validation NLL (nats/row)",
    "gaussian_val_nll": "a single Gaussian's validation NLL",
    "final_train_nll": "last training NLL (nats/row)",
    "fit_seconds": "fit time (s)",
    "n_train": "training rows",
    "n_val": "validation rows",
    "seed": "seed",
    "device": "device",
}


def render(description: dict[str, Any], console: Any) -> None:
    """Print the description as rich tables on ``console`` (stdout: it is the command's data)."""
    for table in (_overview, _columns, _encodings, _layers, _training, _versions):
        console.print(table(description))


def _key_value_table(title: str | Text) -> Table:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("key", style="bold")
    table.add_column("value")
    return table


def _overview(d: dict[str, Any]) -> Table:
    from rich.text import Text

    overview = _key_value_table(Text(f"flowcli checkpoint {d['checkpoint']}"))
    p = d["parameters"]
    layers = sum(r["parameters"] for r in p["layers"])
    _row(
        overview,
        "parameters",
        f"{p['total']:,} (layers {layers:,}, whitening {p['whitening']:,}, base {p['base']:,}, "
        f"discrete part {p['discrete']:,}, conditioning {p['conditioning']:,}, "
        f"conditional questions {p.get('conditional', 0):,})",
    )
    _row(
        overview,
        "columns",
        f"{len(d['columns'])}, {d['modelled_columns']} modelled (the others constant or ignored); "
        f"{d['latent_dim']} latent dimensions (a numeric column with missing cells or atoms has two)",
    )
    _row(overview, "base", _text(d["config"]["base"]))
    _row(overview, "training config", _text(d["config"]["training"]))
    if d["config"].get("columns"):
        _row(overview, "column settings", _text(d["config"]["columns"]))
    _row(overview, "format version", _text(d["format_version"]))
    return overview


def _encoding(column: dict[str, Any]) -> str:
    """The column's one-line summary as the fit-time table shows it (which support, atoms and grid it
    got, and why); empty for a column this version cannot read."""
    from .columns import columns_from_dicts

    try:
        return columns_from_dicts([column])[0].describe()
    except (KeyError, TypeError, ValueError, AttributeError):
        return ""


def _columns(d: dict[str, Any]) -> Table:
    from rich.table import Table

    columns = Table(title="Columns", title_justify="left")
    with_reason = any(col.get("reason") for col in d["columns"])
    for heading in ("column", "role", "dtype", "preprocessing") + (("inferred from",) if with_reason else ()):
        columns.add_column(heading)
    for col in d["columns"]:
        cells = [str(col.get("name")), str(col.get("role")), str(col.get("dtype")), _text(_preprocessing(col))]
        _row(columns, *cells, *([_text(col.get("reason"))] if with_reason else []))
    return columns


def _encodings(d: dict[str, Any]) -> Table:
    """Each column's encoding as the fit-time table shows it: its support, atoms and grid, and why."""
    from rich.table import Table

    encodings = Table(title="Encodings (support, atoms, grid)", title_justify="left")
    for heading in ("column", "encoding"):
        encodings.add_column(heading)
    for col in d["columns"]:
        _row(encodings, str(col.get("name")), _encoding(col))
    return encodings


def _layers(d: dict[str, Any]) -> Table:
    from rich.table import Table

    p = d["parameters"]
    layers = Table(title="Layers", title_justify="left")
    for heading in ("#", "type", "options", "parameters"):
        layers.add_column(heading, justify="right" if heading in ("#", "parameters") else "left")
    for row in p["layers"]:
        _row(layers, str(row["index"]), row["type"], _text(row["options"]), f"{row['parameters']:,}")
    _row(layers, "", "total", "", f"{p['total']:,}", style="bold")
    return layers


def _training(d: dict[str, Any]) -> Table:
    training = _key_value_table("Training")
    for key, label in TRAINING_LABELS.items():
        _row(training, label, _text(d["training"].get(key)) or "n/a")
    for warning in d["training"].get("warnings") or []:
        _row(training, "warning", warning, style="bold")
    for key, value in d["info"].items():
        if key == INFO_KEY:  # a grid of ~120 levels: show the usual anomaly thresholds
            stored = StoredQuantiles.from_info(d["info"])
            shown = ", ".join(f"{q:.1%}: {v:.4g}" for q, v in stored.at((0.001, 0.01, 0.05))) or "malformed"
            _row(training, "logprob quantiles (nats)", f"{shown} (from {stored.source})")
            _patterns(training, stored)
        else:
            _row(training, key, _text(value))
    return training


def _patterns(training: Table, stored: StoredQuantiles) -> None:
    """One row per pattern of absent cells (missing, or on an atom) with quantiles of its own (what
    ``logprob --flag-below`` compares its rows with), whether they come from held-out or sampled rows, and
    how many held-out rows had a pattern too rare for either."""
    if not stored.per_pattern:
        return
    for pattern in stored.patterns:
        shown = ", ".join(f"{q:.1%}: {v:.4g}" for q, v in stored.at((0.001, 0.01, 0.05), pattern.values))
        _row(training, f"  absent: {pattern.label}", f"{shown} (from {pattern.rows} {pattern.source} rows)")
    if stored.other_rows:
        _row(
            training,
            "  absent: other patterns",
            f"{stored.other_rows} held-out rows, fewer than {stored.min_rows} per pattern: compared with the nearest pattern above",
        )


def _versions(d: dict[str, Any]) -> Table:
    from rich.table import Table

    versions = Table(title="Versions", title_justify="left")
    for heading in ("package", "fitted with", "running"):
        versions.add_column(heading)
    fitted, running = d["versions"]["fitted_with"], d["versions"]["running"]
    for name in dict.fromkeys([*running, *fitted]):
        _row(versions, name, fitted.get(name, "n/a"), running.get(name, ""))
    return versions
