"""Type hierarchies (coarse type -> fine types), e.g. FMNERG's 8 coarse and 51 fine types.

GEM's fine-grained reranking asks only among the fine types of an entity's coarse type; the
reranker's training data does the same. A hierarchy is a JSON file `{"hierarchy": {coarse: [fine,
...]}}`; the shipped one (`fmnerg`) lists each coarse type's fine types by training frequency.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

SHIPPED = {"fmnerg": "fmnerg_types.json"}


@dataclass(frozen=True)
class TypeHierarchy:
    children: dict[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for coarse, fines in self.children.items():
            for fine in fines:
                if fine in seen:
                    raise ValueError(f"fine type {fine!r} has two parents: {seen[fine]!r} and {coarse!r}")
                seen[fine] = coarse

    @property
    def coarse_types(self) -> tuple[str, ...]:
        return tuple(self.children)

    @property
    def fine_types(self) -> tuple[str, ...]:
        return tuple(f for fines in self.children.values() for f in fines)

    def parent(self, fine: str) -> str | None:
        return next((c for c, fines in self.children.items() if fine in fines), None)

    def fine_of(self, coarse: str) -> tuple[str, ...]:
        return self.children.get(coarse, ())


@lru_cache(maxsize=8)
def load_hierarchy(name_or_path: str) -> TypeHierarchy:
    """A shipped hierarchy by name (`fmnerg`) or a JSON file by path."""
    if name_or_path in SHIPPED:
        text = (resources.files("mmie_pipe") / "data" / SHIPPED[name_or_path]).read_text(encoding="utf-8")
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"unknown type hierarchy {name_or_path!r}: not a shipped name ({', '.join(SHIPPED)}) or a file")
        text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    return TypeHierarchy({c: tuple(f) for c, f in data["hierarchy"].items()})
