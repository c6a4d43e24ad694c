"""PGIM's curated in-context example pools (`pool_answers.txt`, `pool_labels.txt`).

Both files alternate an image-id line with a content line: the hand-edited answer text, or the gold
`['surface', 'TYPE'], ...` list (a Python literal, `None` for a tweet without entities; a few lines
have an unescaped quote in the surface and are read with a pattern instead). The labels
file may list ids that have no answer; those are skipped.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import DataFormatError
from .lines import numbered_lines


@dataclass(frozen=True)
class PoolExample:
    image_id: str
    answer: str
    labels: list[tuple[str, str]] = field(default_factory=list)


def _pairs(path: str | os.PathLike[str]) -> Iterator[tuple[int, str, str]]:
    """`(line of the id, id, content)` from an id/content alternating file."""
    pending: tuple[int, str] | None = None
    for number, line in numbered_lines(path):
        if pending is None:
            if not line.strip():
                continue
            pending = (number, line.strip())
        else:
            yield pending[0], pending[1], line
            pending = None
    if pending is not None:
        raise DataFormatError(path, pending[0], f"id {pending[1]!r} has no content line after it")


# `['surface', 'TYPE']`; the surface may hold an unescaped quote (`'Sorcerer's Stone'`), which
# makes the line an invalid literal, so such lines are read pair by pair with this pattern.
_PAIR = re.compile(r"\[\s*'(.*?)'\s*,\s*'([A-Za-z_]+)'\s*\]")


def _labels(path, number: int, text: str) -> list[tuple[str, str]]:
    try:
        value = ast.literal_eval(text.strip() or "None")
    except (ValueError, SyntaxError) as exc:
        pairs = _PAIR.findall(text)
        if pairs and not _PAIR.sub("", text).replace(",", "").strip():
            return pairs
        raise DataFormatError(path, number, f"labels are not a Python literal: {exc}") from None
    if value is None:
        return []
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = (value,)  # a single pair evaluates to a bare list
    pairs = list(value) if isinstance(value, (list, tuple)) else None
    if pairs is None or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs):
        raise DataFormatError(path, number, f"expected ['surface', 'TYPE'] pairs, got {text[:80]!r}")
    return [(surface, kind) for surface, kind in pairs]


def load_pgim_examples(
    answers_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> Iterator[PoolExample]:
    """Stream the pool in answer-file order with each example's gold labels."""
    labels = {image_id: _labels(labels_path, number + 1, text) for number, image_id, text in _pairs(labels_path)}
    for number, image_id, answer in _pairs(answers_path):
        if image_id not in labels:
            raise DataFormatError(answers_path, number, f"example {image_id!r} has no entry in {labels_path}")
        yield PoolExample(image_id=image_id, answer=answer.strip(), labels=labels[image_id])
