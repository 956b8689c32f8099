"""Flow layers. Importing this package registers every layer family.

To add a family: create a module here with ``@register("name")`` classes and import it below.
"""

# Imported for their registrations.
from . import autoregressive, cnf, coupling, linear, planar, radial, residual, sos, spline, umnn  # noqa: F401
from .base import LAYERS, Layer, build_layer, layer_options, register

__all__ = ["LAYERS", "Layer", "build_layer", "layer_options", "register"]
