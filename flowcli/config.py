"""YAML config -> validated config objects.

Layer and base options are not listed here: they are read from the keyword-only parameters of the
registered classes (names, defaults, type hints), so a new layer family needs no change in this file.
Every error names the offending key and the allowed values.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
from .layers.base import BUILDER_ARGS
from .registry import Registry

DEFAULT_CONFIG_NAME = "default.yaml"

# PyYAML follows YAML 1.1, where `1.0e30` and `1e-3` (no sign or no dot in the exponent form) are
# strings while `1.0e+30` is a float. Users write both, so a float option also accepts a string that
# is a plain decimal number (not "nan", "inf", "1_000" or anything with spaces).
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass
class Spec:
    """One layer or base: its registered ``type`` and validated options."""

    type: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.options}


@dataclass
class TrainingConfig:
    epochs: int = 200
    batch_size: int = 512
    # "auto": 1e-3 for a run of 200 epochs or more, more for shorter ones (train.learning_rate); or a number.
    # The default file's value, as every built-in one here: a training section without lr gets "auto".
    lr: float | Literal["auto"] = "auto"
    val_fraction: float = 0.1
    patience: int = 20
    # "auto": max(1e-4, 1 / training rows), more shrinkage on small tables (train.weight_decay); or a number.
    weight_decay: float | Literal["auto"] = "auto"
    grad_clip: float = 5.0
    ema: float = 0.999  # decay of the weight average that is validated and saved (0: the raw weights)
    schedule: Literal["cosine", "plateau", "constant"] = "cosine"
    max_rows: int = 0  # 0 = use every row; otherwise fit on a random subset of this many rows
    # --- distributed / out-of-core / GPU options (see datasource.py and accel.py) ---
    shuffle_buffer: int = 262144  # rows held for shuffling when streaming Parquet from disk
    amp: Literal["none", "bf16"] = "none"  # bf16 autocast of the conditioner networks during training
    compile: bool = False  # torch.compile the training step (eager fallback if compilation fails)
    # Fit the network of conditional questions (sample --given, logprob --target, impute); false saves its
    # share of the fit time (20-40%) for models that only score and sample whole rows.
    conditional: bool = True

    def validate(self) -> None:
        _require(self.epochs >= 1, "training.epochs", "must be an integer >= 1")
        _require(self.batch_size >= 1, "training.batch_size", "must be an integer >= 1")
        _require(
            self.lr == "auto" or (math.isfinite(self.lr) and self.lr > 0),
            "training.lr",
            "must be a finite number > 0, or auto",
        )
        _require(0 <= self.val_fraction < 1, "training.val_fraction", "must be in [0, 1)")
        _require(self.patience >= 1, "training.patience", "must be an integer >= 1")
        _require(
            self.weight_decay == "auto" or (math.isfinite(self.weight_decay) and self.weight_decay >= 0),
            "training.weight_decay",
            "must be a finite number >= 0, or auto",
        )
        _require(self.grad_clip > 0, "training.grad_clip", "must be > 0")
        _require(0 <= self.ema < 1, "training.ema", "must be in [0, 1) (0 turns weight averaging off)")
        _require(self.max_rows >= 0, "training.max_rows", "must be >= 0 (0 means all rows)")
        _require(self.shuffle_buffer >= 1, "training.shuffle_buffer", "must be an integer >= 1 (rows)")


@dataclass
class Config:
    base: Spec
    layers: list[Spec]
    training: TrainingConfig
    columns: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.to_dict(),
            "layers": [s.to_dict() for s in self.layers],
            "training": dataclasses.asdict(self.training),
            "columns": self.columns,
        }


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _unknown_key(key: str, where: str, allowed: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(sorted(allowed)) or "none"
    return ConfigError(f"{where}{key}: unknown key{hint}; allowed keys: {listed}")


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(hint)[0])}s"
    return {int: "integer", float: "number", bool: "boolean (true/false)", str: "string"}.get(hint, str(hint))


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    ok: bool
    if origin in (typing.Union, types.UnionType):  # the first arm that accepts the value
        for arm in typing.get_args(hint):
            try:
                return _coerce(value, arm, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_describe(hint)}, got {value!r}")
    if origin is Literal:
        ok = value in typing.get_args(hint) and isinstance(value, (str, int, float, bool))
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(hint)[:1]
            return [_coerce(v, item, key) for v in value]
        ok = False
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        if isinstance(value, str) and _DECIMAL.fullmatch(value):
            value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            try:
                value = float(value)
            except OverflowError:  # an integer beyond the float range
                value = math.inf
            if not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{key}: expected {_describe(hint)}, got {value!r}")
    return value


def class_options(cls: type[Any]) -> dict[str, tuple[Any, Any]]:
    """The YAML options of a layer or base class: ``{name: (type hint, default)}`` of keyword-only args."""
    hints = typing.get_type_hints(cls.__init__)
    params = inspect.signature(cls.__init__).parameters
    return {
        name: (hints.get(name, Any), p.default)
        for name, p in params.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in BUILDER_ARGS
    }


def _parse_spec(raw: Any, where: str, registry: Registry[Any]) -> Spec:
    if isinstance(raw, str):  # shorthand: "- maf"
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'type' key, got {raw!r}")
    if "type" not in raw:
        raise registry.missing(where)
    type_name = raw["type"]
    allowed = class_options(registry.lookup(type_name, where))
    options: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "type":
            continue
        if key not in allowed:
            raise _unknown_key(key, f"{where}.", list(allowed))
        options[key] = _coerce(value, allowed[key][0], f"{where}.{key}")
    return Spec(type_name, options)


# The sections a config may leave out, taken then from the packaged default (a config holding only
# `columns:` means "the default model, with these column roles").
DEFAULT_SECTIONS = ("base", "layers", "training")


def _with_default_sections(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with each section it leaves out taken from the packaged default config. Merged section by
    section: a section that is given replaces the default's whole (``layers:`` is the user's list of
    layers; the keys a ``training:`` leaves out take their built-in values, as with any config)."""
    missing = [key for key in DEFAULT_SECTIONS if key not in raw]
    if not missing:
        return raw
    path = default_config_path()
    default = load_yaml_text(path.read_text(encoding="utf-8"), str(path))
    return {**{key: default[key] for key in missing if key in default}, **raw}


def parse_config(raw: Any) -> Config:
    """Validate a config mapping (as loaded from YAML) into a ``Config``; sections it leaves out come
    from the packaged default (see ``_with_default_sections``)."""
    from .bases import BASES
    from .layers import LAYERS

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    top = ["base", "layers", "training", "columns"]
    for key in raw:
        if key not in top:
            raise _unknown_key(str(key), "", top)
    raw = _with_default_sections(raw)

    base = _parse_spec(raw.get("base", {"type": "normal"}), "base", BASES)

    raw_layers = raw.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise ConfigError("layers: expected a non-empty list of layers, e.g. '- type: maf'")
    layers: list[Spec] = []
    for i, item in enumerate(raw_layers):
        repeat = 1
        if isinstance(item, dict) and "repeat" in item:
            item = dict(item)
            repeat = item.pop("repeat")
            if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
                raise ConfigError(f"layers[{i}].repeat: expected an integer >= 1, got {repeat!r}")
        spec = _parse_spec(item, f"layers[{i}]", LAYERS)
        # Deep copies: repeated layers sharing one `hidden` list would alias each other (and a dumped
        # config would show YAML anchors).
        layers += [Spec(spec.type, copy.deepcopy(spec.options)) for _ in range(repeat)]

    raw_training = raw.get("training") or {}
    if not isinstance(raw_training, dict):
        raise ConfigError(f"training: expected a mapping, got {raw_training!r}")
    allowed = typing.get_type_hints(TrainingConfig)
    values: dict[str, Any] = {}
    for key, value in raw_training.items():
        if key not in allowed:
            raise _unknown_key(str(key), "training.", list(allowed))
        values[key] = _coerce(value, allowed[key], f"training.{key}")
    training = TrainingConfig(**values)
    training.validate()

    from .columns import parse_column_overrides

    columns = parse_column_overrides(raw.get("columns"))
    return Config(base=base, layers=layers, training=training, columns=columns)


def _strict_loader() -> type:
    """A safe YAML loader that refuses duplicate keys (PyYAML silently keeps the last one, so a
    repeated ``training:`` block would quietly discard the first)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may legitimately override
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def load_yaml_text(text: str, source: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_strict_loader())  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: malformed YAML: nested too deeply") from None


def default_config_path() -> Path:
    return Path(__file__).parent / "presets" / DEFAULT_CONFIG_NAME


def load_config(path: str | Path | None) -> Config:
    """Read and validate a YAML config file; ``None`` means the packaged default."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    return parse_config(load_yaml_text(text, str(path)))


def resolve_config(config: Config | dict[str, Any] | str | Path | None) -> Config:
    """A config as the fit API and ``fit -c`` accept it: a ``Config``, a mapping as in YAML, a YAML
    path, or the name of a packaged preset (``nsf``); None is the packaged default."""
    if isinstance(config, Config):
        return copy.deepcopy(config)  # a fit may set its epochs: never on the caller's object
    if isinstance(config, dict):
        return parse_config(config)
    if config is not None and not Path(config).exists():
        presets = default_config_path().parent
        preset = presets / f"{config}.yaml"
        if "/" not in str(config) and preset.exists():
            config = preset
        elif "/" not in str(config) and not str(config).endswith((".yaml", ".yml")):
            # A bare name is a preset's (-c nsf): a misspelled one gets the presets, not "file not found".
            names = sorted(p.stem for p in presets.glob("*.yaml"))
            close = difflib.get_close_matches(str(config), names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{config}: no such preset or config file; {hint}presets: {', '.join(names)}")
    return load_config(config)
