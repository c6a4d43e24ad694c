"""Entity P/R/F1 must equal seqeval's (strict IOB2 for the `strict` rule, default mode for
`conlleval`) on real gold and many random perturbations of it."""

from __future__ import annotations

import random

import pytest

seqeval_metrics = pytest.importorskip("seqeval.metrics")
from seqeval.scheme import IOB2  # noqa: E402

from data_fixtures import real_data_root  # noqa: E402
from mmie_pipe.data import load_split  # noqa: E402
from mmie_pipe.metrics import DocPair, bio_to_entities, bio_to_spans, score_entities  # noqa: E402

TYPES = ("PER", "LOC", "ORG", "MISC")


@pytest.fixture(scope="module")
def tweets():
    root = real_data_root()
    out = []
    for record in load_split("twitter2017", "test", data_root=root):
        out.append((record.tokens, to_bio(len(record.tokens), spans_of(record))))
    return out


def spans_of(record):
    """Token spans of a record's gold entities (offsets -> token indices)."""
    starts, ends, position = {}, {}, 0
    for i, token in enumerate(record.tokens):
        starts[position] = i
        ends[position + len(token)] = i + 1
        position += len(token) + 1
    return [(starts[e.start], ends[e.end], e.type) for e in record.gold.entities]


def to_bio(n, spans):
    tags = ["O"] * n
    for start, end, kind in spans:
        tags[start] = f"B-{kind}"
        for i in range(start + 1, end):
            tags[i] = f"I-{kind}"
    return tags


def perturb(rng, n, spans):
    """Drop, shift, retype, resize and add entities; keeps spans non-overlapping (BIO can't overlap)."""
    out = []
    for start, end, kind in spans:
        roll = rng.random()
        if roll < 0.15:
            continue  # dropped
        if roll < 0.3:
            shift = rng.choice((-1, 1))
            start, end = start + shift, end + shift
        elif roll < 0.45:
            kind = rng.choice([t for t in TYPES if t != kind])
        elif roll < 0.55:
            end = end + rng.choice((-1, 1))
        out.append((start, end, kind))
    for _ in range(rng.choice((0, 0, 1, 2))):
        start = rng.randrange(n)
        out.append((start, min(n, start + rng.choice((1, 1, 2, 3))), rng.choice(TYPES)))
    taken, kept = set(), []
    for start, end, kind in out:
        cells = set(range(start, end))
        if 0 <= start < end <= n and not cells & taken:
            taken |= cells
            kept.append((start, end, kind))
    return kept


def noisy_tags(rng, tags):
    """Raw tag noise, including stray I- tags and type breaks inside a span."""
    out = list(tags)
    for i in range(len(out)):
        if rng.random() < 0.08:
            out[i] = rng.choice(["O", "B-" + rng.choice(TYPES), "I-" + rng.choice(TYPES)])
    return out


def ours(tweets, pred_tags, rule):
    pairs = [
        DocPair(str(i), bio_to_entities(tokens, pred, rule), bio_to_entities(tokens, gold, rule))
        for i, ((tokens, gold), pred) in enumerate(zip(tweets, pred_tags))
    ]
    return score_entities(pairs).scores


def theirs(tweets, pred_tags, rule):
    gold = [g for _, g in tweets]
    kwargs = {"mode": "strict", "scheme": IOB2} if rule == "strict" else {}
    micro = tuple(
        f(gold, pred_tags, **kwargs)
        for f in (seqeval_metrics.precision_score, seqeval_metrics.recall_score, seqeval_metrics.f1_score)
    )
    report = seqeval_metrics.classification_report(gold, pred_tags, output_dict=True, zero_division=0, **kwargs)
    return micro, report


def assert_same(scores, micro, report):
    assert (scores.micro.precision, scores.micro.recall, scores.micro.f1) == pytest.approx(micro, abs=1e-12)
    for kind, prf in scores.per_type.items():
        if prf.n_gold:
            row = report[kind]
            assert row["support"] == prf.n_gold
            assert (prf.precision, prf.recall, prf.f1) == pytest.approx(
                (row["precision"], row["recall"], row["f1-score"]), abs=1e-12
            ), kind


@pytest.mark.parametrize("seed", range(12))
def test_entity_perturbations_match_seqeval_strict(tweets, seed):
    rng = random.Random(seed)
    pred = []
    for tokens, gold in tweets:
        spans = [(s.start, s.end, s.type) for s in bio_to_spans(gold)]
        pred.append(to_bio(len(tokens), perturb(rng, len(tokens), spans)))
    micro, report = theirs(tweets, pred, "strict")
    assert_same(ours(tweets, pred, "strict"), micro, report)
    assert micro[2] < 1.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rule", ["strict", "conlleval"])
def test_tag_noise_matches_seqeval(tweets, seed, rule):
    rng = random.Random(1000 + seed)
    pred = [noisy_tags(rng, gold) for _, gold in tweets]
    micro, report = theirs(tweets, pred, rule)
    assert_same(ours(tweets, pred, rule), micro, report)


def test_gold_against_itself(tweets):
    pred = [gold for _, gold in tweets]
    micro, _ = theirs(tweets, pred, "strict")
    assert micro == (1.0, 1.0, 1.0)
    assert ours(tweets, pred, "strict").micro.f1 == 1.0



def test_twitter2015_stray_i_counts_match_seqeval_conventions():
    root = real_data_root()
    gold = [r.tokens for r in load_split("twitter2015", "test", data_root=root)]
    from mmie_pipe.data import read_conll_blocks

    tags = [b.columns[0] for b in read_conll_blocks(root / "twitter2015" / "test.txt")]
    assert len(tags) == len(gold)
    strict = seqeval_metrics.classification_report(tags, tags, output_dict=True, mode="strict", scheme=IOB2)
    default = seqeval_metrics.classification_report(tags, tags, output_dict=True)
    assert strict["micro avg"]["support"] == 5072
    assert default["micro avg"]["support"] == 5207
