"""Shared construction of input `Record`s from token-level annotations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..metrics.bio import TokenSpan, token_char_offsets
from ..records import Box, Entity, Gold, Record, Relation


class UniqueIds:
    """Record ids: the image id the first time it is seen, then `<id>#2`, `<id>#3`, ...

    Ids must be unique because predictions are joined to gold by id; image ids alone are not
    (MNRE repeats a sentence per entity pair, and a re-posted image would collide).
    """

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def __call__(self, base: str) -> str:
        self._seen[base] += 1
        n = self._seen[base]
        return base if n == 1 else f"{base}#{n}"


def image_file_name(image_id: str) -> str:
    """The image's file name in the published archives (`<id>.jpg`)."""
    return image_id if image_id.lower().endswith((".jpg", ".jpeg", ".png")) else f"{image_id}.jpg"


def image_stem(image_id: str) -> str:
    """Image id without its extension: the key caption files use."""
    for ext in (".jpg", ".jpeg", ".png"):
        if image_id.lower().endswith(ext):
            return image_id[: -len(ext)]
    return image_id


def make_record(
    *,
    record_id: str,
    tokens: Sequence[str],
    entities: Sequence[Entity],
    relations: Sequence[Relation] = (),
    meta: dict[str, Any],
) -> Record:
    return Record(
        id=record_id,
        text=" ".join(tokens),
        tokens=list(tokens),
        image=None,
        gold=Gold(entities=list(entities), relations=list(relations)),
        meta=meta,
    )


def span_entities(
    tokens: Sequence[str],
    spans: Sequence[TokenSpan],
    boxes: dict[str, list[Box]] | None = None,
    fine_types: Sequence[str] | None = None,
) -> list[Entity]:
    """Entities with character offsets into `" ".join(tokens)`.

    With `boxes` (surface string -> boxes, GMNER style) every entity gets its boxes and
    `groundable` = whether it has any; without, `groundable` stays unknown (None).
    """
    offsets = token_char_offsets(tokens)
    entities = []
    for i, span in enumerate(spans):
        text = " ".join(tokens[span.start : span.end])
        extra: dict[str, Any] = {}
        if boxes is not None:
            found = boxes.get(text, ())
            extra = {"groundable": bool(found), "boxes": list(found)}
        if fine_types is not None:
            extra["fine_type"] = fine_types[i]
        entities.append(
            Entity(text=text, start=offsets[span.start][0], end=offsets[span.end - 1][1], type=span.type, **extra)
        )
    return entities
