"""The one registry: stages, backends and vision tools are looked up here by name.

Names are versioned where behaviour can change (`extract.v1`); a bare name resolves to the
highest registered version, so old pipeline files keep their old behaviour by naming the version.
"""

from __future__ import annotations

import importlib
import re
from collections import defaultdict
from typing import Any, Callable, TypeVar

from .errors import ConfigError

T = TypeVar("T")

# Modules whose import registers built-ins; imported on first lookup so `import mmie_pipe` stays cheap.
_BUILTIN_MODULES = {
    "stages": ("mmie_pipe.stages",),
    "backends": ("mmie_pipe.adapters",),
}
_VERSIONED = re.compile(r"^(?P<base>.+)\.v(?P<version>\d+)$")


def base_name(name: str) -> str:
    """`extract.v1` -> `extract`; an unversioned name is its own base."""
    match = _VERSIONED.match(name)
    return match["base"] if match else name


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, dict[int, Any]] = defaultdict(dict)
        self._loaded = False

    def register(self, name: str, version: int = 1) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if version in self._items[name]:
                raise ValueError(f"{self.kind} {name}.v{version} is registered twice")
            self._items[name][version] = obj
            return obj

        return deco

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in _BUILTIN_MODULES.get(self.kind, ()):
                importlib.import_module(module)

    def get(self, name: str) -> Any:
        self._load_builtins()
        match = _VERSIONED.match(name)
        base, version = base_name(name), (int(match["version"]) if match else None)
        versions = self._items.get(base)
        if not versions:
            known = ", ".join(sorted(self.names())) or "none"
            raise KeyError(f"unknown {self.kind[:-1]} {name!r} (known: {known})")
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise KeyError(f"{self.kind[:-1]} {base!r} has no version {version} (has {sorted(versions)})")
        return versions[version]

    def build(self, name: str, options: dict[str, Any]) -> Any:
        """Instantiate a registered class from its `Config` (a pydantic model with a `kind` field)."""
        try:
            cls = self.get(name)
        except KeyError as exc:
            raise ConfigError(exc.args[0]) from exc
        return cls(cls.Config.model_validate({"kind": name, **options}))

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def versions(self, name: str) -> list[int]:
        self._load_builtins()
        return sorted(self._items.get(name, {}))


stages = Registry("stages")
backends = Registry("backends")
