"""Flow layers. Importing this package registers every layer family.

To add a family: create a module here with ``@register("name")`` classes and import it below.
"""

from . import autoregressive, cnf, coupling, linear, residual, sos, umnn  # noqa: F401  (imported for their registrations)
from .base import LAYERS, Layer, build_layer, layer_options, register

__all__ = ["LAYERS", "Layer", "build_layer", "layer_options", "register"]
