"""The contract every flow layer follows, and the registry that maps YAML ``type:`` names to layers.

Direction convention (as in zuko and nflows): a layer maps data ``x`` towards the latent ``z``.

    forward(x) -> (z, ladj)    ladj = log |det dz/dx|, one value per row
    inverse(z) -> (x, ladj)    ladj = log |det dx/dz| = -(forward ladj at x)

Both directions return their log|det| in the same pass as the output, never in a second pass.

A new layer family is one module in ``flowcli/layers/`` that subclasses ``Layer`` and decorates the
class with ``@register("yaml_name")``. Its keyword-only constructor arguments *are* its YAML options:
``config.py`` reads their names, defaults and type hints to validate the user's YAML, so nothing else
in the package has to change. If the constructor also accepts ``index`` (the layer's position in the
stack), the builder passes it; coupling and autoregressive layers use it to alternate their masks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry

# Constructor arguments the model builder supplies, never YAML options: the layer's position in the stack,
# and the width of the context a conditional layer takes (``Layer.conditional``).
BUILDER_ARGS = ("index", "context")


class Layer(nn.Module):
    """A bijection between data space and latent space with its log|det Jacobian|.

    A layer whose class sets ``conditional = True`` takes a second argument, ``context`` (a tensor of
    shape ``(n, width)``, the one-hot discrete part of each row, or None), in both directions, and its
    constructor a ``context`` width; its conditioner networks see the context, so the map (and its
    density) depends on the row's discrete values. Other layers are the same map for every row.
    """

    type_name: ClassVar[str]  # set by ``register``; unregistered helper layers have none
    conditional: ClassVar[bool] = False

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def initialize(self, x: Tensor) -> None:
        """Data-dependent initialization from a batch of inputs to this layer (e.g. actnorm). Default: nothing."""


LAYERS: Registry[Layer] = Registry("layer")


def register(name: str) -> Callable[[type[Layer]], type[Layer]]:
    """Class decorator that makes a layer available as ``type: <name>`` in the YAML config."""
    return LAYERS.register(name)


def layer_options(cls: type[Layer]) -> dict[str, inspect.Parameter]:
    """The YAML options of a layer: its keyword-only constructor parameters."""
    params = inspect.signature(cls.__init__).parameters
    return {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in BUILDER_ARGS}


def build_layer(type_name: str, dim: int, index: int, options: dict[str, Any], context: int = 0) -> Layer:
    """Instantiate a registered layer; options are assumed validated by ``config.py``. ``context`` is the
    width of the context a conditional layer is built for (0: none)."""
    cls = LAYERS[type_name]
    kwargs = dict(options)
    if "index" in inspect.signature(cls.__init__).parameters:
        kwargs["index"] = index
    if context and cls.conditional:
        kwargs["context"] = context
    return cls(dim, **kwargs)


def check(condition: bool, key: str, message: str) -> None:
    """Raise a ConfigError naming the option ``key`` when ``condition`` is false (for range checks in layers)."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """Smoothly limit ``x`` to (-bound, bound); keeps log-scales finite without killing gradients."""
    return bound * torch.tanh(x / bound)
