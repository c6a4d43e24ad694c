"""The score sets each task reports, computed from id-joined records.

- `mner`: entity span + type.
- `gmner`: `gmner` (span + type + grounding), `mner` (no box), `eeg` (span + grounding, no type),
  the three numbers GMNER papers report.
- `fmnerg`: `fmnerg` (fine type + grounding), `fmner` (fine type), `gmner_coarse` (coarse type +
  grounding), `mner_coarse` (coarse type), `eeg`.
- `mre`: micro P/R/F1 over non-`None` relations, per label, plus accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .entities import DocPair, EntityResult, Mode, score_entities
from .join import Joined
from .relations import RelationPair, RelationResult, score_relations

TASKS: tuple[str, ...] = ("mner", "gmner", "fmnerg", "mre")

# metric name -> (type field, grounded)
_ENTITY_METRICS: dict[str, dict[str, tuple[str | None, bool]]] = {
    "mner": {"mner": ("type", False)},
    "gmner": {"gmner": ("type", True), "mner": ("type", False), "eeg": (None, True)},
    "fmnerg": {
        "fmnerg": ("fine_type", True),
        "fmner": ("fine_type", False),
        "gmner_coarse": ("type", True),
        "mner_coarse": ("type", False),
        "eeg": (None, True),
    },
}


@dataclass
class TaskResult:
    task: str
    mode: str
    metrics: dict[str, EntityResult | RelationResult]
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "mode": self.mode,
            "counts": self.counts,
            "metrics": {name: result.scores.to_dict() for name, result in self.metrics.items()},
        }


def evaluate(joined: Joined, task: str, mode: Mode = "offsets", keep_errors: bool = False) -> TaskResult:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    counts = joined.counts()
    metrics: dict[str, EntityResult | RelationResult] = {}
    if task == "mre":
        pairs = [RelationPair(r.id, r.pred_relations, r.gold_relations) for r in joined.records]
        metrics["mre"] = score_relations(pairs, mode=mode, keep_errors=keep_errors)
        counts["gold_relations"] = sum(len(p.gold) for p in pairs)
    else:
        pairs = [DocPair(r.id, r.pred_entities, r.gold_entities) for r in joined.records]
        for name, (type_field, grounded) in _ENTITY_METRICS[task].items():
            metrics[name] = score_entities(
                pairs, mode=mode, type_field=type_field, grounded=grounded, keep_errors=keep_errors
            )
        counts["gold_entities"] = sum(len(p.gold) for p in pairs)
        counts["pred_entities"] = sum(len(p.pred) for p in pairs)
        if task in ("gmner", "fmnerg"):
            counts["gold_groundable"] = sum(1 for p in pairs for e in p.gold if e.boxes)
    return TaskResult(task, mode, metrics, counts)
