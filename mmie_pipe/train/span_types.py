"""A probability distribution over entity types for one decoded span.

For each type `t`, the span's tags are re-labelled as `t` (same B/I/E/S prefixes) while the rest
of the decoded path stays as it is; the score is what that changes in the CRF path score: the
span's emission scores for `t`'s tags (the B-/I- type scores) plus the transitions into, inside
and out of the span. A softmax over types turns the scores into probabilities. Because Viterbi
chose the decoded path over each of these alternatives, the decoded type is always the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..metrics.bio import TokenSpan
from .tagging import TagSet


def span_type_distribution(
    emissions: Sequence[Sequence[float]],
    transitions: Sequence[Sequence[float]],
    start_transitions: Sequence[float],
    end_transitions: Sequence[float],
    path: Sequence[int],
    span: TokenSpan,
    tags: TagSet,
) -> dict[str, float]:
    """`emissions[word][tag]` and the CRF's scores (as nested lists), the decoded tag-id `path`."""
    import math

    index = tags.index
    length = span.end - span.start
    prev_tag = path[span.start - 1] if span.start > 0 else None
    next_tag = path[span.end] if span.end < len(path) else None
    scores: dict[str, float] = {}
    for entity_type in tags.types:
        ids = [index[f"{tags.span_prefix(k, length)}-{entity_type}"] for k in range(length)]
        score = sum(emissions[span.start + k][tag] for k, tag in enumerate(ids))
        score += sum(transitions[a][b] for a, b in zip(ids, ids[1:]))
        score += start_transitions[ids[0]] if prev_tag is None else transitions[prev_tag][ids[0]]
        score += end_transitions[ids[-1]] if next_tag is None else transitions[ids[-1]][next_tag]
        scores[entity_type] = score
    top = max(scores.values())
    weights = {t: math.exp(s - top) for t, s in scores.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}
