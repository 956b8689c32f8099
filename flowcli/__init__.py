"""flowcli: learn the density of a table with a normalizing flow, then sample, score, encode, decode.

    import flowcli
    model = flowcli.fit(df, epochs=20, seed=0)   # or flowcli.fit("sales.parquet", "nsf", output="sales.flow")
    model.save("sales.flow")
    model = flowcli.load("sales.flow")
    model.log_prob(df); model.sample(10); model.encode(df); model.decode(latent_df)

Torch is imported lazily so that ``flowcli --help`` starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The only place the version is written: pyproject.toml reads it from here. Keep it a plain string literal,
# so that setuptools reads it without importing the package (and torch) at build time.
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .fitting import StrictFitError, fit
    from .model import Model


def load(path: str, device: str = "cpu") -> Model:
    """Load a checkpoint written by ``flowcli fit`` (safetensors + JSON; never unpickles)."""
    from .model import load_model

    return load_model(path, device)


def __getattr__(name: str) -> Any:
    # Imported on first use: torch is heavy, and ``flowcli --help`` should not wait for it.
    if name == "Model":
        from .model import Model

        return Model
    if name == "fit":
        from .fitting import fit

        return fit
    if name == "StrictFitError":  # what fit(..., strict=True) raises, its .model the fitted model
        from .fitting import StrictFitError

        return StrictFitError
    raise AttributeError(name)


__all__ = ["Model", "StrictFitError", "__version__", "fit", "load"]
