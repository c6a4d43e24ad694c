"""Instruction data for a type reranker: one multiple-choice question per gold entity, rendered by
the very template and request builder the `rerank` stage uses (`mmie_pipe.reranking`).

Options are the gold type plus up to K-1 confusable types: the most probable wrong types of a run's
`type_probs` for the same span (a tagger's or MQA's predictions, joined by record id and character
span) when given, else types sampled from the label set. In fine-grained mode all options are fine
types of the gold coarse type (FMNERG's hierarchy), as at run time. The gold letter cycles through
the positions for each option count, so every position is the answer equally often; the answer is
never part of the request (training appends it after the prompt).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..data.hierarchy import TypeHierarchy
from ..model_io import ImagePart
from ..records import Entity, Record
from ..reranking import Question, option_letters, top_types

Context = Literal["image", "caption", "none"]


@dataclass(frozen=True)
class ChoiceExample:
    record_id: str
    question: Question
    answer: str  # the gold letter
    gold: str  # the gold type


@dataclass
class BuildStats:
    entities: int = 0
    examples: int = 0
    skipped_single_option: int = 0
    skipped_no_image: int = 0
    confusables_from_predictions: int = 0
    confusables_sampled: int = 0
    answer_positions: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "answer_positions"},
                "answer_positions": dict(sorted(self.answer_positions.items()))}


def predicted_distributions(records: Iterable[Record]) -> dict[tuple[str, int, int], dict[str, float]]:
    """(record id, start, end) -> `type_probs` of a run's predicted entities."""
    out = {}
    for record in records:
        for e in record.entities or ():
            if e.type_probs:
                out[(record.id, e.start, e.end)] = dict(e.type_probs)
    return out


def label_set(records: Sequence[Record], granularity: str) -> list[str]:
    field_name = "type" if granularity == "coarse" else "fine_type"
    seen: dict[str, None] = {}
    for record in records:
        for e in record.gold.entities if record.gold else ():
            value = getattr(e, field_name)
            if value:
                seen.setdefault(value)
    return list(seen)


def build_examples(
    records: Sequence[Record],
    *,
    granularity: Literal["coarse", "fine"] = "coarse",
    top_k: int = 5,
    types: Sequence[str] | None = None,
    hierarchy: TypeHierarchy | None = None,
    distributions: Mapping[tuple[str, int, int], Mapping[str, float]] | None = None,
    context: Context = "caption",
    seed: int = 0,
) -> tuple[list[ChoiceExample], BuildStats]:
    if granularity == "fine" and hierarchy is None:
        raise ValueError("fine-grained reranker data needs a type hierarchy")
    rng = random.Random(seed)
    labels = list(types) if types else label_set(records, granularity)
    cycle: dict[int, int] = defaultdict(int)  # option count -> next gold position
    stats = BuildStats()
    examples: list[ChoiceExample] = []
    for record in records:
        image = None
        if context == "image":
            if not record.image:
                stats.skipped_no_image += len(record.gold.entities) if record.gold else 0
                continue
            image = ImagePart.from_path(record.image)
        caption = (record.caption or record.visual_context) if context == "caption" else None
        for entity in record.gold.entities if record.gold else ():
            stats.entities += 1
            gold, pool = _gold_and_pool(entity, granularity, labels, hierarchy)
            if gold is None or len(pool) < 2:
                stats.skipped_single_option += 1
                continue
            n = min(top_k, len(pool))
            wrong = [t for t in pool if t != gold]
            probs = (distributions or {}).get((record.id, entity.start, entity.end))
            ranked = top_types(probs, n - 1, allowed=wrong) if probs else []
            if ranked:
                stats.confusables_from_predictions += 1
            else:
                stats.confusables_sampled += 1
            others = ranked + rng.sample([t for t in wrong if t not in ranked], n - 1 - len(ranked))
            rng.shuffle(others)
            position = cycle[n] % n
            cycle[n] += 1
            options = others[:position] + [gold] + others[position:]
            letter = option_letters(n)[position]
            stats.answer_positions[letter] += 1
            examples.append(ChoiceExample(record.id, Question(record.text, entity.text, tuple(options), caption, image), letter, gold))
    stats.examples = len(examples)
    return examples, stats


def _gold_and_pool(entity: Entity, granularity: str, labels: list[str], hierarchy: TypeHierarchy | None) -> tuple[str | None, list[str]]:
    if granularity == "coarse":
        return entity.type, labels
    coarse = entity.type if entity.type in hierarchy.children else hierarchy.parent(entity.fine_type or "")
    return entity.fine_type, list(hierarchy.fine_of(coarse)) if coarse else []
