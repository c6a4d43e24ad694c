"""Relation extraction (MNRE) scores.

P/R/F1 are micro-averaged over relations whose label is not `None` (the no-relation label): a
predicted relation is correct when its head span, tail span and label equal a gold relation's.
Accuracy is over every gold relation, `None` included: the prediction for a gold (head, tail)
pair is the label of the first predicted relation on that pair, or `None` when there is none.
In `string` mode head and tail are compared by surface string instead of offsets.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from ..records import Relation
from .entities import Mode, MODES
from .matching import match
from .prf import Scores

NO_RELATION = "None"


@dataclass(frozen=True)
class RelationPair:
    id: str
    pred: Sequence[Relation]
    gold: Sequence[Relation]


@dataclass
class RelationResult:
    scores: Scores
    unmatched_pred: list[tuple[str, Relation]] = field(default_factory=list)
    missed_gold: list[tuple[str, Relation]] = field(default_factory=list)


def _arguments(relation: Relation, mode: Mode) -> Hashable:
    if mode == "offsets":
        return (relation.head.start, relation.head.end, relation.tail.start, relation.tail.end)
    return (relation.head.text, relation.tail.text)


def score_relations(pairs: Iterable[RelationPair], *, mode: Mode = "offsets", keep_errors: bool = False) -> RelationResult:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    result = RelationResult(Scores())
    scores = result.scores
    correct = total = 0

    def key(relation: Relation) -> Hashable:
        return (_arguments(relation, mode), relation.label)

    for pair in pairs:
        preds = [r for r in pair.pred if r.label != NO_RELATION]
        golds = [r for r in pair.gold if r.label != NO_RELATION]
        matched = match(preds, golds, key, key)
        scores.micro.tp += len(matched)
        scores.micro.n_pred += len(preds)
        scores.micro.n_gold += len(golds)
        for r in preds:
            scores.type(r.label).n_pred += 1
        for r in golds:
            scores.type(r.label).n_gold += 1
        for _, j in matched:
            scores.type(golds[j].label).tp += 1

        predicted_label: dict[Hashable, str] = {}
        for r in pair.pred:
            predicted_label.setdefault(_arguments(r, mode), r.label)
        for r in pair.gold:
            total += 1
            correct += predicted_label.get(_arguments(r, mode), NO_RELATION) == r.label

        if keep_errors and (len(matched) < len(preds) or len(matched) < len(golds)):
            taken_pred = {i for i, _ in matched}
            taken_gold = {j for _, j in matched}
            result.unmatched_pred += [(pair.id, r) for i, r in enumerate(preds) if i not in taken_pred]
            result.missed_gold += [(pair.id, r) for j, r in enumerate(golds) if j not in taken_gold]
    scores.extra["accuracy"] = correct / total if total else 0.0
    scores.extra["accuracy_support"] = total
    return result
