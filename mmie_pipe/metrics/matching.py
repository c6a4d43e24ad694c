"""Multiset matching of predictions to gold within one document.

Items are grouped by a hashable key (span + type, or surface string + type); inside a group, a
prediction may only take a gold item it is `compatible` with (e.g. the box overlaps), and each
gold item is taken at most once. The matching is a maximum bipartite matching, so the result
does not depend on the order predictions come in (this matters when one tweet mentions the same
string twice and only one mention's box is right).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

P = TypeVar("P")
G = TypeVar("G")


def match(
    preds: Sequence[P],
    golds: Sequence[G],
    key_pred: Callable[[P], Hashable],
    key_gold: Callable[[G], Hashable],
    compatible: Callable[[P, G], bool] | None = None,
) -> list[tuple[int, int]]:
    """Index pairs `(pred_i, gold_j)` of a maximum matching between same-key items."""
    gold_groups: dict[Hashable, list[int]] = defaultdict(list)
    for j, gold in enumerate(golds):
        gold_groups[key_gold(gold)].append(j)
    pred_groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, pred in enumerate(preds):
        pred_groups[key_pred(pred)].append(i)
    pairs: list[tuple[int, int]] = []
    for key, pred_ids in pred_groups.items():
        gold_ids = gold_groups.get(key)
        if not gold_ids:
            continue
        if compatible is None:
            pairs.extend(zip(pred_ids, gold_ids))
        else:
            pairs.extend(_max_matching(pred_ids, gold_ids, lambda i, j: compatible(preds[i], golds[j])))
    return pairs


def _max_matching(pred_ids: list[int], gold_ids: list[int], ok: Callable[[int, int], bool]) -> list[tuple[int, int]]:
    """Kuhn's augmenting paths; groups are a handful of items, so this is cheap."""
    edges = {i: [j for j in gold_ids if ok(i, j)] for i in pred_ids}
    owner: dict[int, int] = {}  # gold -> pred

    def augment(i: int, seen: set[int]) -> bool:
        for j in edges[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in pred_ids:
        augment(i, set())
    return sorted((i, j) for j, i in owner.items())
