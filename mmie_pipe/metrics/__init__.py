"""Evaluation: pure functions from (prediction, gold) pairs to P/R/F1, micro and per type.

Conventions are documented in each module and in docs/metrics.md: `bio` (BIO -> spans, strict
IOB2 by default), `entities` (span/type/grounding matching, offsets vs string mode), `relations`
(MRE), `join` (predictions joined to gold by id), `tasks` (what each task reports).
"""

from .bio import BIO_RULES, BioRule, TokenSpan, bio_to_entities, bio_to_spans, token_char_offsets
from .entities import (
    IOU_THRESHOLD,
    MODES,
    DocPair,
    EntityResult,
    grounding_correct,
    predicted_box,
    score_entities,
)
from .join import Joined, JoinedRecord, join_by_id
from .matching import match
from .prf import PRF, Scores
from .relations import NO_RELATION, RelationPair, RelationResult, score_relations
from .tasks import TASKS, TaskResult, evaluate

__all__ = [
    "BIO_RULES",
    "IOU_THRESHOLD",
    "MODES",
    "NO_RELATION",
    "PRF",
    "TASKS",
    "BioRule",
    "DocPair",
    "EntityResult",
    "Joined",
    "JoinedRecord",
    "RelationPair",
    "RelationResult",
    "Scores",
    "TaskResult",
    "TokenSpan",
    "bio_to_entities",
    "bio_to_spans",
    "evaluate",
    "grounding_correct",
    "join_by_id",
    "match",
    "predicted_box",
    "score_entities",
    "score_relations",
    "token_char_offsets",
]
