"""Pair predictions with gold by record `id` (never by position)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..records import Entity, Record, Relation


@dataclass
class JoinedRecord:
    id: str
    pred_entities: list[Entity]
    gold_entities: list[Entity]
    pred_relations: list[Relation]
    gold_relations: list[Relation]


@dataclass
class Joined:
    records: list[JoinedRecord] = field(default_factory=list)
    error_records: int = 0  # predictions carrying `errors`: scored as empty predictions
    missing_predictions: list[str] = field(default_factory=list)  # gold ids with no prediction line
    unknown_predictions: list[str] = field(default_factory=list)  # prediction ids not in gold (ignored)
    no_gold: list[str] = field(default_factory=list)  # predictions without gold (when gold is inline)

    def counts(self) -> dict[str, int]:
        return {
            "records": len(self.records),
            "error_records": self.error_records,
            "missing_predictions": len(self.missing_predictions),
            "unknown_predictions": len(self.unknown_predictions),
            "predictions_without_gold": len(self.no_gold),
        }


def _pred_parts(record: Record) -> tuple[list[Entity], list[Relation], bool]:
    if record.errors:
        return [], [], True
    return list(record.entities or []), list(record.relations or []), False


def join_by_id(predictions: Iterable[Record], gold: Iterable[Record] | None = None) -> Joined:
    """Join prediction records with gold records by `id`.

    Without `gold`, each prediction's own `gold` field is the reference. A prediction id seen twice
    is an error (which one would count?). A gold record with no prediction counts as an empty
    prediction and is listed in `missing_predictions`.
    """
    joined = Joined()
    preds: dict[str, Record] = {}
    for record in predictions:
        if record.id in preds:
            raise ValueError(f"prediction id {record.id!r} appears more than once")
        preds[record.id] = record
    if gold is None:
        for record in preds.values():
            if record.gold is None:
                joined.no_gold.append(record.id)
                continue
            entities, relations, failed = _pred_parts(record)
            joined.error_records += failed
            joined.records.append(
                JoinedRecord(record.id, entities, list(record.gold.entities), relations, list(record.gold.relations))
            )
        return joined
    seen: set[str] = set()
    for reference in gold:
        if reference.id in seen:
            raise ValueError(f"gold id {reference.id!r} appears more than once")
        seen.add(reference.id)
        gold_entities = list(reference.gold.entities) if reference.gold else []
        gold_relations = list(reference.gold.relations) if reference.gold else []
        record = preds.get(reference.id)
        if record is None:
            joined.missing_predictions.append(reference.id)
            entities, relations = [], []
        else:
            entities, relations, failed = _pred_parts(record)
            joined.error_records += failed
        joined.records.append(JoinedRecord(reference.id, entities, gold_entities, relations, gold_relations))
    joined.unknown_predictions = [i for i in preds if i not in seen]
    return joined
