"""Classes registered by the name users write in YAML (``type: maf``, ``base: {type: normal}``).

Layers and bases share this one mechanism: a class decorator that files the class under its name and
records that name on the class (``type_name``, which checkpoints and ``flowcli inspect`` show), and a
lookup whose error names the allowed types and suggests the closest one to a typo.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar, Generic, Protocol, TypeVar

from .errors import ConfigError


class Named(Protocol):
    """What a registered class carries: the name it was registered under."""

    type_name: ClassVar[str]


T = TypeVar("T", bound=Named)


class Registry(Mapping[str, type[T]], Generic[T]):
    """Name -> class, filled by ``@registry.register("name")``; read-only otherwise.

    A ``Mapping``, so ``name in registry``, ``sorted(registry)`` and ``registry.items()`` work as on a dict.
    ``what`` names the kind of thing in error messages ("layer", "base").
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: make the class available as ``type: <name>``."""

        def decorate(cls: type[T]) -> type[T]:
            if name in self._classes:  # two modules claiming one YAML name is a programming error
                raise RuntimeError(f"{self.what} type {name!r} registered twice")
            self._classes[name] = cls
            cls.type_name = name
            return cls

        return decorate

    def names(self) -> list[str]:
        """The registered names, sorted (as error messages list them)."""
        return sorted(self._classes)

    def lookup(self, type_name: object, where: str) -> type[T]:
        """The class registered as ``type_name``, or a ConfigError at ``<where>.type`` that lists the
        allowed names and suggests the closest one."""
        if isinstance(type_name, str) and type_name in self._classes:
            return self._classes[type_name]
        close = difflib.get_close_matches(str(type_name), list(self._classes), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{where}.type: unknown {self.what} type {type_name!r}{hint}; allowed: {', '.join(self.names())}"
        )

    def missing(self, where: str) -> ConfigError:
        """The error for a spec without a ``type`` key."""
        return ConfigError(f"{where}.type: missing; allowed {self.what} types: {', '.join(self.names())}")

    def __getitem__(self, name: str) -> type[T]:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)
