"""What the report shows about each record: every predicted and gold item classified against the
other, with the project's own matching rules (`mmie_pipe.metrics`), and a confusion table of types.

Entities (mner / gmner / fmnerg):
- `correct`: matched under the task's main metric (span + type, plus grounding for GMNER);
- `wrong_type`: the span matches a gold entity, but not its type;
- `wrong_box` (grounded tasks): span and type match, the grounding does not (box IoU < 0.5, or a
  box where gold has none, or none where gold has one);
- `spurious`: no gold entity has this span;
- `missed`: gold with no prediction of the same span.
Relations (mre): `correct`, `wrong_label` (same head and tail, other label), `spurious`, `missed`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from ..metrics.entities import Mode, entity_key, grounding_correct
from ..metrics.join import JoinedRecord
from ..metrics.matching import match
from ..metrics.relations import NO_RELATION
from ..records import Entity, Relation

Status = Literal["correct", "wrong_type", "wrong_box", "spurious", "missed", "wrong_label"]
NONE = "(none)"  # the confusion table's row/column for "no entity on this span"

# task -> (type field of the main metric, grounded)
MAIN_METRIC: dict[str, tuple[str, bool]] = {
    "mner": ("type", False),
    "gmner": ("type", True),
    "fmnerg": ("fine_type", True),
}


@dataclass
class EntityMark:
    entity: Entity
    status: Status
    source: Literal["pred", "gold"]
    partner: Entity | None = None  # the other side's entity on the same span, if any


@dataclass
class RelationMark:
    relation: Relation
    status: Status
    source: Literal["pred", "gold"]
    partner: Relation | None = None


@dataclass
class RecordAnalysis:
    entities: list[EntityMark] = field(default_factory=list)
    relations: list[RelationMark] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(m.status for m in [*self.entities, *self.relations])


def analyse_entities(
    pred: list[Entity], gold: list[Entity], task: str, mode: Mode, confusion: Counter | None = None
) -> list[EntityMark]:
    type_field, grounded = MAIN_METRIC[task]
    main = match(
        pred, gold,
        lambda e: entity_key(e, mode, type_field), lambda e: entity_key(e, mode, type_field),
        grounding_correct if grounded else None,
    )
    marks: list[EntityMark] = [EntityMark(pred[i], "correct", "pred", gold[j]) for i, j in main]
    free_pred = [i for i in range(len(pred)) if i not in {i for i, _ in main}]
    free_gold = [j for j in range(len(gold)) if j not in {j for _, j in main}]
    # Among what the main metric left over, pair predictions and gold that share a span.
    span_pairs = match(
        [pred[i] for i in free_pred], [gold[j] for j in free_gold],
        lambda e: entity_key(e, mode, None), lambda e: entity_key(e, mode, None),
    )
    paired_pred = {free_pred[a]: free_gold[b] for a, b in span_pairs}
    paired_gold = {free_gold[b]: free_pred[a] for a, b in span_pairs}
    for i in free_pred:
        j = paired_pred.get(i)
        if j is None:
            marks.append(EntityMark(pred[i], "spurious", "pred"))
        else:
            same_type = getattr(pred[i], type_field) == getattr(gold[j], type_field)
            marks.append(EntityMark(pred[i], "wrong_box" if same_type else "wrong_type", "pred", gold[j]))
    for j in free_gold:
        if j not in paired_gold:
            marks.append(EntityMark(gold[j], "missed", "gold"))
    if confusion is not None:
        for i, j in [*main, *paired_pred.items()]:
            confusion[(str(getattr(gold[j], type_field)), str(getattr(pred[i], type_field)))] += 1
        for i in free_pred:
            if i not in paired_pred:
                confusion[(NONE, str(getattr(pred[i], type_field)))] += 1
        for j in free_gold:
            if j not in paired_gold:
                confusion[(str(getattr(gold[j], type_field)), NONE)] += 1
    marks.sort(key=lambda m: (m.entity.start, m.entity.end, m.source))
    return marks


def _pair_key(relation: Relation, mode: Mode):
    if mode == "string":
        return (relation.head.text, relation.tail.text)
    return (relation.head.start, relation.head.end, relation.tail.start, relation.tail.end)


def analyse_relations(
    pred: list[Relation], gold: list[Relation], mode: Mode, confusion: Counter | None = None
) -> list[RelationMark]:
    pred = [r for r in pred if r.label != NO_RELATION]
    gold_all = gold
    gold = [r for r in gold_all if r.label != NO_RELATION]
    main = match(pred, gold, lambda r: (_pair_key(r, mode), r.label), lambda r: (_pair_key(r, mode), r.label))
    marks = [RelationMark(pred[i], "correct", "pred", gold[j]) for i, j in main]
    taken_pred, taken_gold = {i for i, _ in main}, {j for _, j in main}
    free_gold = [j for j in range(len(gold)) if j not in taken_gold]
    by_pair = {}
    for j in free_gold:
        by_pair.setdefault(_pair_key(gold[j], mode), []).append(j)
    for i in range(len(pred)):
        if i in taken_pred:
            continue
        candidates = by_pair.get(_pair_key(pred[i], mode))
        j = candidates.pop(0) if candidates else None
        if j is not None:
            taken_gold.add(j)
        marks.append(RelationMark(pred[i], "wrong_label" if j is not None else "spurious", "pred", gold[j] if j is not None else None))
        if confusion is not None:
            confusion[(gold[j].label if j is not None else NONE, pred[i].label)] += 1
    for j in range(len(gold)):
        if j not in taken_gold:
            marks.append(RelationMark(gold[j], "missed", "gold"))
            if confusion is not None:
                confusion[(gold[j].label, NONE)] += 1
    if confusion is not None:
        for i, j in main:
            confusion[(gold[j].label, pred[i].label)] += 1
    return marks


def analyse(record: JoinedRecord, task: str, mode: Mode, confusion: Counter | None = None) -> RecordAnalysis:
    if task == "mre":
        return RecordAnalysis(relations=analyse_relations(record.pred_relations, record.gold_relations, mode, confusion))
    return RecordAnalysis(entities=analyse_entities(record.pred_entities, record.gold_entities, task, mode, confusion))


def infer_task(records: list[JoinedRecord]) -> str:
    """The task a run's gold supports: relations -> mre; fine types -> fmnerg; boxes -> gmner."""
    gold = [e for r in records for e in r.gold_entities]
    if any(r.gold_relations for r in records):
        return "mre"
    if any(e.fine_type for e in gold):
        return "fmnerg"
    if any(e.boxes for e in gold) or any(e.boxes for r in records for e in r.pred_entities):
        return "gmner"
    return "mner"
