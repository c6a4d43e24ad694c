"""Entity-level scores: exact span (or surface string) + type, optionally + grounding.

Keys (`mode`):
- `offsets` (default): `(start, end, type)` within the record; spans are character offsets.
- `string`: `(surface string, type)` within the record, matched as a multiset; this is what the
  published RiVEG / MQA scoring scripts do (image id + entity string + type). Records are joined
  by id first, so the image id part of their key is implicit.

Grounding (GMNER; `grounded=True`): a prediction is ungroundable when `groundable is False` or it
has no box; otherwise its box is `boxes[0]`. Gold is ungroundable when it has no boxes. A
type/span match is grounding-correct when both are ungroundable, or both are grounded and
IoU(predicted box, any gold box of the entity) >= 0.5 (inclusive).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..records import Box, Entity
from .matching import match
from .prf import Scores

Mode = Literal["offsets", "string"]
MODES: tuple[str, ...] = ("offsets", "string")
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class DocPair:
    """One record's predicted and gold items, joined by `id`."""

    id: str
    pred: Sequence[Entity]
    gold: Sequence[Entity]


@dataclass
class EntityResult:
    scores: Scores
    # (record id, entity) for predictions with no gold partner, and gold with no prediction.
    unmatched_pred: list[tuple[str, Entity]] = field(default_factory=list)
    missed_gold: list[tuple[str, Entity]] = field(default_factory=list)


def predicted_box(entity: Entity) -> Box | None:
    if entity.groundable is False or not entity.boxes:
        return None
    return entity.boxes[0]


def grounding_correct(pred: Entity, gold: Entity, threshold: float = IOU_THRESHOLD) -> bool:
    box = predicted_box(pred)
    if not gold.boxes:
        return box is None
    return box is not None and any(box.iou(g) >= threshold for g in gold.boxes)


def entity_key(entity: Entity, mode: Mode, type_field: str | None) -> Hashable:
    where: Hashable = (entity.start, entity.end) if mode == "offsets" else entity.text
    return (where, getattr(entity, type_field)) if type_field else (where,)


def score_entities(
    pairs: Iterable[DocPair],
    *,
    mode: Mode = "offsets",
    type_field: str | None = "type",
    grounded: bool = False,
    keep_errors: bool = False,
) -> EntityResult:
    """Micro and per-type P/R/F1. `type_field` is `type`, `fine_type`, or None (untyped, as EEG).

    Per-type counts are keyed by the entity's own type (predictions by theirs, gold by theirs);
    for untyped scores there is no per-type breakdown.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    result = EntityResult(Scores())
    scores = result.scores

    def key(entity: Entity) -> Hashable:
        return entity_key(entity, mode, type_field)

    for pair in pairs:
        matched = match(pair.pred, pair.gold, key, key, grounding_correct if grounded else None)
        scores.micro.tp += len(matched)
        scores.micro.n_pred += len(pair.pred)
        scores.micro.n_gold += len(pair.gold)
        if type_field:
            for entity in pair.pred:
                scores.type(str(getattr(entity, type_field))).n_pred += 1
            for entity in pair.gold:
                scores.type(str(getattr(entity, type_field))).n_gold += 1
            for _, j in matched:
                scores.type(str(getattr(pair.gold[j], type_field))).tp += 1
        if keep_errors and (len(matched) < len(pair.pred) or len(matched) < len(pair.gold)):
            taken_pred = {i for i, _ in matched}
            taken_gold = {j for _, j in matched}
            result.unmatched_pred += [(pair.id, e) for i, e in enumerate(pair.pred) if i not in taken_pred]
            result.missed_gold += [(pair.id, e) for j, e in enumerate(pair.gold) if j not in taken_gold]
    return result
