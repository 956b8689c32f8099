"""Opt-in speed for fit: bf16 autocast of the conditioner networks and ``torch.compile``.

Each is applied only where it keeps the result correct:

- ``training.amp: bf16`` runs the *conditioner networks* (the MLPs of coupling layers, the MADEs of
  autoregressive layers: nearly all of the FLOPs) under ``torch.autocast(dtype=bfloat16)`` and casts
  their outputs back to float32. The elementwise transforms, every log|det| term, the base density and
  the loss stay float32: a bf16 sum of log-scales would carry about 3 significant digits into the
  likelihood. Validation, and everything after fit, run without autocast (evaluation is float64).
  bf16 autocast works on CPU too, so this path is tested without a GPU.
- ``training.compile: true`` wraps the training forward in ``torch.compile``. If the compiler stack
  fails (no C++ toolchain, an unsupported op), the fit continues eagerly after one warning.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .layers.nets import MADE

# The backend torch.compile uses; tests swap in "aot_eager" to exercise the code path without a C++ compiler.
COMPILE_BACKEND = "inductor"


def conditioner_networks(flow: nn.Module) -> list[nn.Module]:
    """The conditioner networks of a flow: every MADE (autoregressive layers) and the MLP of every
    coupling layer. Other networks are left alone on purpose: e.g. UMNN's integrand network *is* the
    derivative whose log is the log|det|, so running it in bf16 would cost the likelihood its precision."""
    from .layers.coupling import _Coupling

    found: list[nn.Module] = []
    for module in flow.modules():
        if isinstance(module, MADE):
            found.append(module)
        elif isinstance(module, _Coupling):
            found.append(module.net)
    return found


class Bf16Conditioners:
    """Context manager installing bf16 autocast on a flow's conditioners, active only inside ``step()``."""

    def __init__(self, flow: nn.Module, device_type: str) -> None:
        self.device_type = device_type
        self.modules = conditioner_networks(flow)
        self.active = False

    def _wrap(self, module: nn.Module) -> None:
        inner = module.forward

        def forward(*args: Any, **kwargs: Any) -> Tensor:
            if not self.active:
                return inner(*args, **kwargs)
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                out = inner(*args, **kwargs)
            return out.float()

        module.forward = forward  # an instance attribute shadows the class's forward until removed

    def __enter__(self) -> Bf16Conditioners:
        for module in self.modules:
            self._wrap(module)
        return self

    def __exit__(self, *exc: object) -> None:
        for module in self.modules:
            del module.forward

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False


def mixed_precision(flow: nn.Module, amp: str, device: torch.device) -> Any:
    """``Bf16Conditioners`` for ``amp == "bf16"``; otherwise an object whose ``step()`` does nothing."""
    if amp == "bf16":
        return Bf16Conditioners(flow, device.type)
    return _NoAmp()


class _NoAmp:
    def __enter__(self) -> _NoAmp:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def step(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def _is_compiler_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))


class CompiledStep:
    """Calls ``torch.compile(module)``; on a compiler failure, warns once and calls ``module`` eagerly."""

    def __init__(self, module: nn.Module, on_fallback: Callable[[str], None] | None = None) -> None:
        self.module = module
        self.compiled: Any = torch.compile(module, backend=COMPILE_BACKEND)
        self.on_fallback = on_fallback

    def __call__(self, x: Tensor) -> Tensor:
        if self.compiled is None:
            return self.module(x)
        try:
            return self.compiled(x)
        except Exception as exc:  # only the compiler's own errors; anything else is a bug and propagates
            if not _is_compiler_error(exc):
                raise
            self.compiled = None
            message = f"torch.compile failed ({type(exc).__name__}); training continues without it"
            (self.on_fallback or (lambda m: warnings.warn(m, RuntimeWarning, stacklevel=2)))(message)
            return self.module(x)


def training_step(module: nn.Module, compile: bool) -> Callable[[Tensor], Tensor]:
    return CompiledStep(module) if compile else module
