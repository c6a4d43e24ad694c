"""GMNER / MNER / EEG and FMNERG scores on small cases computed by hand."""

from __future__ import annotations

import pytest

from mmie_pipe.metrics import DocPair, evaluate, grounding_correct, join_by_id, score_entities
from mmie_pipe.records import Box, Entity, Gold, Record

TEXT = "Trump met Trump fans in New York"


def ent(text, type_="PER", boxes=(), groundable=None, start=None, fine=None):
    start = TEXT.index(text) if start is None else start
    boxes = [Box(xmin=a, ymin=b, xmax=c, ymax=d) for a, b, c, d in boxes]
    if groundable is None:
        groundable = bool(boxes)
    return Entity(text=text, start=start, end=start + len(text), type=type_, boxes=boxes, groundable=groundable, fine_type=fine)


def scores(pred, gold, **kw):
    return score_entities([DocPair("t", pred, gold)], **kw).scores.micro


def gmner_triplet(pred, gold, mode="offsets"):
    record = Record(id="t", text=TEXT, gold=Gold(entities=gold), entities=pred)
    result = evaluate(join_by_id([record]), "gmner", mode)
    return {name: (m.scores.micro.tp, m.scores.micro.n_pred, m.scores.micro.n_gold) for name, m in result.metrics.items()}


def test_any_of_several_gold_boxes_counts():
    gold = [ent("Trump", boxes=[(0, 0, 10, 10), (100, 100, 200, 200)])]
    assert gmner_triplet([ent("Trump", boxes=[(100, 100, 200, 200)])], gold)["gmner"] == (1, 1, 1)
    assert gmner_triplet([ent("Trump", boxes=[(50, 50, 60, 60)])], gold)["gmner"] == (0, 1, 1)


def test_only_the_first_predicted_box_is_used():
    gold = [ent("Trump", boxes=[(0, 0, 10, 10)])]
    pred = [ent("Trump", boxes=[(50, 50, 60, 60), (0, 0, 10, 10)])]
    assert gmner_triplet(pred, gold)["gmner"] == (0, 1, 1)


def test_ungroundable_vs_grounded_mismatch():
    grounded_gold = [ent("New York", "LOC", boxes=[(0, 0, 10, 10)])]
    ungroundable_gold = [ent("New York", "LOC")]
    no_box = [ent("New York", "LOC")]
    a_box = [ent("New York", "LOC", boxes=[(0, 0, 10, 10)])]
    assert gmner_triplet(no_box, ungroundable_gold) == {"gmner": (1, 1, 1), "mner": (1, 1, 1), "eeg": (1, 1, 1)}
    assert gmner_triplet(no_box, grounded_gold) == {"gmner": (0, 1, 1), "mner": (1, 1, 1), "eeg": (0, 1, 1)}
    assert gmner_triplet(a_box, ungroundable_gold) == {"gmner": (0, 1, 1), "mner": (1, 1, 1), "eeg": (0, 1, 1)}
    # groundable=False wins over a stray box on the prediction
    flagged = [ent("New York", "LOC", boxes=[(0, 0, 10, 10)], groundable=False)]
    assert gmner_triplet(flagged, ungroundable_gold)["gmner"] == (1, 1, 1)


def test_iou_exactly_one_half_is_correct():
    gold_box = (0, 0, 10, 10)
    half = (0, 0, 10, 5)  # inside the gold box, half its area: IoU = 50 / 100 = 0.5
    just_below = (0, 0, 10, 4.999)
    gold = [ent("Trump", boxes=[gold_box])]
    assert Box(xmin=0, ymin=0, xmax=10, ymax=5).iou(Box(xmin=0, ymin=0, xmax=10, ymax=10)) == 0.5
    assert gmner_triplet([ent("Trump", boxes=[half])], gold)["gmner"] == (1, 1, 1)
    assert gmner_triplet([ent("Trump", boxes=[just_below])], gold)["gmner"] == (0, 1, 1)


def test_eeg_ignores_type_mner_ignores_box():
    gold = [ent("Trump", "PER", boxes=[(0, 0, 10, 10)])]
    pred = [ent("Trump", "ORG", boxes=[(0, 0, 10, 10)])]
    assert gmner_triplet(pred, gold) == {"gmner": (0, 1, 1), "mner": (0, 1, 1), "eeg": (1, 1, 1)}
    pred = [ent("Trump", "PER", boxes=[(90, 90, 99, 99)])]
    assert gmner_triplet(pred, gold) == {"gmner": (0, 1, 1), "mner": (1, 1, 1), "eeg": (0, 1, 1)}


def test_duplicate_entity_strings_in_one_tweet():
    # "Trump" twice; both mentions share the string's boxes (that is how GMNER xml assigns them).
    boxes = [(0, 0, 10, 10)]
    gold = [ent("Trump", boxes=boxes, start=0), ent("Trump", boxes=boxes, start=10)]
    # offsets: the second mention's box is wrong -> 1 of 2
    pred = [ent("Trump", boxes=boxes, start=0), ent("Trump", boxes=[(50, 50, 60, 60)], start=10)]
    assert gmner_triplet(pred, gold)["gmner"] == (1, 2, 2)
    # string mode: multiset of ("Trump", PER); one prediction alone finds one of two
    assert gmner_triplet([ent("Trump", boxes=boxes, start=10)], gold, "string") == {
        "gmner": (1, 1, 2),
        "mner": (1, 1, 2),
        "eeg": (1, 1, 2),
    }
    # string mode: three predictions of a string that occurs twice: 2 correct, 3 predicted
    three = [ent("Trump", boxes=boxes, start=0), ent("Trump", boxes=boxes, start=10), ent("Trump", boxes=boxes, start=0)]
    assert gmner_triplet(three, gold, "string")["gmner"] == (2, 3, 2)


def test_matching_is_order_independent():
    # Two gold mentions of one string with different boxes (possible in other data): a greedy
    # matcher that gives the first prediction to the first gold would find only one.
    gold = [ent("Trump", boxes=[(0, 0, 10, 10), (100, 100, 110, 110)], start=0), ent("Trump", boxes=[(0, 0, 10, 10)], start=10)]
    pred = [ent("Trump", boxes=[(0, 0, 10, 10)], start=0), ent("Trump", boxes=[(100, 100, 110, 110)], start=10)]
    assert scores(pred, gold, mode="string", grounded=True).tp == 2
    assert scores(list(reversed(pred)), gold, mode="string", grounded=True).tp == 2


def test_offsets_vs_string_mode_for_a_wrong_occurrence():
    gold = [ent("Trump", start=0)]
    pred = [ent("Trump", start=10)]
    assert scores(pred, gold).tp == 0
    assert scores(pred, gold, mode="string").tp == 1


def test_per_type_counts():
    gold = [ent("Trump", start=0), ent("New York", "LOC")]
    pred = [ent("Trump", start=0), ent("New York", "ORG")]
    per_type = score_entities([DocPair("t", pred, gold)]).scores.per_type
    assert (per_type["PER"].tp, per_type["PER"].n_pred, per_type["PER"].n_gold) == (1, 1, 1)
    assert (per_type["LOC"].tp, per_type["LOC"].n_pred, per_type["LOC"].n_gold) == (0, 0, 1)
    assert (per_type["ORG"].tp, per_type["ORG"].n_pred, per_type["ORG"].n_gold) == (0, 1, 0)


def test_fmnerg_fine_and_coarse():
    gold = [ent("Trump", "person", boxes=[(0, 0, 10, 10)], start=0, fine="politician")]
    pred = [ent("Trump", "person", boxes=[(0, 0, 10, 10)], start=0, fine="athlete")]
    record = Record(id="t", text=TEXT, gold=Gold(entities=gold), entities=pred)
    result = evaluate(join_by_id([record]), "fmnerg")
    tps = {name: m.scores.micro.tp for name, m in result.metrics.items()}
    assert tps == {"fmnerg": 0, "fmner": 0, "gmner_coarse": 1, "mner_coarse": 1, "eeg": 1}


def test_empty_prediction_scores_zero_not_nan():
    micro = scores([], [ent("Trump", start=0)])
    assert (micro.precision, micro.recall, micro.f1) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(("box", "ok"), [((0, 0, 10, 10), True), (None, False)])
def test_grounding_correct_helper(box, ok):
    gold = ent("Trump", boxes=[(0, 0, 10, 10)], start=0)
    pred = ent("Trump", boxes=[box] if box else [], start=0)
    assert grounding_correct(pred, gold) is ok
