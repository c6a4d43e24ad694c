"""MNRE v2: one Python dict literal per line, one line per (head, tail) pair.

Keys: `token` (list), `h`/`t` ({`name`, `pos`: [start, end) token offsets}), `img_id`, `relation`.
Lines are read with `ast.literal_eval` (never `eval`): they are data, not code.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from typing import Any

from ..metrics.bio import token_char_offsets
from ..records import Entity, Record, Relation
from .build import image_stem, make_record
from .errors import DataFormatError
from .lines import numbered_lines


def load_mnre(path: str | os.PathLike[str], *, split: str | None = None) -> Iterator[Record]:
    """Stream MNRE instances; record id is `<image stem>#L<line>` (stable and unique per line)."""
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        item = _parse(path, number, line)
        tokens = item["token"]
        offsets = token_char_offsets(tokens)
        head = _argument(path, number, item, "h", tokens, offsets)
        tail = _argument(path, number, item, "t", tokens, offsets)
        relation = Relation(head=head, tail=tail, label=item["relation"])
        meta = {
            "dataset": "mnre",
            "split": split,
            "image_id": item["img_id"],
            "source": os.fspath(path),
            "source_line": number,
        }
        yield make_record(
            record_id=f"{image_stem(item['img_id'])}#L{number}",
            tokens=tokens,
            entities=[head, tail],
            relations=[relation],
            meta=meta,
        )


def _parse(path, number: int, line: str) -> dict[str, Any]:
    try:
        item = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise DataFormatError(path, number, f"not a Python literal ({type(exc).__name__}: {exc})") from None
    if not isinstance(item, dict):
        raise DataFormatError(path, number, f"expected a dict literal, got {type(item).__name__}")
    missing = [k for k in ("token", "h", "t", "img_id", "relation") if k not in item]
    if missing:
        raise DataFormatError(path, number, f"missing key(s): {', '.join(missing)}")
    tokens = item["token"]
    if not (isinstance(tokens, list) and tokens and all(isinstance(t, str) and t for t in tokens)):
        raise DataFormatError(path, number, "'token' must be a non-empty list of non-empty strings")
    if not (isinstance(item["relation"], str) and item["relation"]):
        raise DataFormatError(path, number, "'relation' must be a non-empty string")
    if not isinstance(item["img_id"], str):
        raise DataFormatError(path, number, "'img_id' must be a string")
    return item


def _argument(path, number: int, item: dict, key: str, tokens: list[str], offsets) -> Entity:
    arg = item[key]
    pos = arg.get("pos") if isinstance(arg, dict) else None
    if not (isinstance(pos, (list, tuple)) and len(pos) == 2 and all(isinstance(p, int) for p in pos)):
        raise DataFormatError(path, number, f"'{key}' needs 'pos': [start, end] token offsets")
    start, end = pos
    if not 0 <= start < end <= len(tokens):
        raise DataFormatError(path, number, f"'{key}' pos {list(pos)} outside the {len(tokens)} tokens")
    text = " ".join(tokens[start:end])
    # `name` is informational; the span is authoritative (names occasionally differ in spacing).
    return Entity(text=text, start=offsets[start][0], end=offsets[end - 1][1], type=None)
