"""Entity-level P/R/F1 of a tagger on gold records (teammate A's `score_entities`, offsets mode)."""

from __future__ import annotations

from collections.abc import Sequence

from ..metrics import DocPair, score_entities
from ..records import Record
from .config import HEAD_FIELDS
from .predictor import Predictor


def score_tagger(predictor: Predictor, records: Sequence[Record]) -> dict[str, dict]:
    """Scores keyed by the entity field they type-match on (`type`; also `fine_type` in GEM mode)."""
    predictions = predictor.predict_records(records)
    pairs = [DocPair(r.id, p, r.gold.entities if r.gold else []) for r, p in zip(records, predictions)]
    fields = ["type", "fine_type"] if predictor.tagger.config.gem else ["type"]
    return {f: score_entities(pairs, type_field=f).scores.to_dict() for f in fields}


def selection_f1(scores: dict[str, dict], head: str) -> float:
    """Micro F1 on the field the given head fills (dev model selection)."""
    return float(scores[HEAD_FIELDS[head]]["micro"]["f1"])
