"""Tagger building blocks without training: tag schemes, alignment, input encoding, CRF
constraints, type distributions, micro-batching."""

from __future__ import annotations

import asyncio
import random

import pytest

from mmie_pipe.metrics.bio import TokenSpan
from mmie_pipe.records import Entity, Record
from mmie_pipe.train.alignment import entity_token_spans, post_tokens
from mmie_pipe.batching import MicroBatcher
from mmie_pipe.train.tagging import TagSet


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_spans_round_trip_through_tags(scheme):
    tags = TagSet(scheme, ("LOC", "PER"))
    spans = [TokenSpan(0, 1, "PER"), TokenSpan(2, 5, "LOC"), TokenSpan(5, 7, "PER")]
    encoded = tags.encode(8, spans)
    assert tags.is_valid(encoded)
    assert tags.decode(encoded) == spans
    if scheme == "BIOES":
        assert encoded[:7] == ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "B-PER", "E-PER"]


def test_illegal_transitions():
    bio = TagSet("BIO", ("PER", "ORG"))
    assert not bio.is_valid(["I-PER"])
    assert not bio.is_valid(["O", "I-PER"])
    assert not bio.is_valid(["B-ORG", "I-PER"])
    assert bio.is_valid(["B-ORG", "I-ORG", "B-PER", "O"])
    bioes = TagSet("BIOES", ("PER",))
    assert not bioes.is_valid(["B-PER"])  # never closed
    assert not bioes.is_valid(["B-PER", "O"])
    assert not bioes.is_valid(["S-PER", "I-PER", "E-PER"])
    assert bioes.is_valid(["B-PER", "I-PER", "E-PER", "S-PER"])


def test_post_tokens_use_given_tokens_else_whitespace():
    record = Record(id="1", text="RT @x :  Obama rocks", tokens=["RT", "@x", ":", "Obama", "rocks"])
    tokens = post_tokens(record)
    assert [record.text[s:e] for s, e in tokens.offsets] == record.tokens
    plain = post_tokens(Record(id="2", text="  Obama\tin  Paris "))
    assert plain.words == ["Obama", "in", "Paris"]
    assert plain.offsets == [(2, 7), (8, 10), (12, 17)]


def test_entities_map_to_token_spans():
    text = "Obama visits New York today"
    offsets = post_tokens(Record(id="1", text=text)).offsets
    entities = [Entity(text="New York", start=13, end=21, type="LOC"), Entity(text="Obam", start=0, end=4, type="PER")]
    aligned = entity_token_spans(entities, offsets)
    assert aligned.spans == [TokenSpan(0, 1, "PER"), TokenSpan(2, 4, "LOC")]
    assert aligned.snapped == 1  # "Obam" widened to the whole token


def test_type_distribution_argmax_is_the_decoded_type():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchcrf")
    from mmie_pipe.train.model import ConstrainedCrf
    from mmie_pipe.train.span_types import span_type_distribution

    for scheme in ("BIO", "BIOES"):
        tags = TagSet(scheme, ("LOC", "MISC", "ORG", "PER"))
        crf = ConstrainedCrf(tags)
        torch.manual_seed(0)
        checked = 0
        for trial in range(40):
            with torch.no_grad():
                crf.transitions.normal_()
                crf.start_transitions.normal_()
                crf.end_transitions.normal_()
                crf.pin_forbidden()
            emissions = torch.randn(1, 12, len(tags)) * 2
            path = crf.decode(emissions, mask=torch.ones(1, 12, dtype=torch.bool))[0]
            names = [tags.tags[i] for i in path]
            assert tags.is_valid(names), names
            for span in tags.decode(names):
                probs = span_type_distribution(
                    emissions[0].tolist(), crf.transitions.tolist(), crf.start_transitions.tolist(),
                    crf.end_transitions.tolist(), path, span, tags,
                )
                assert sum(probs.values()) == pytest.approx(1.0)
                assert max(probs, key=probs.get) == span.type
                checked += 1
        assert checked > 20


def test_microbatcher_groups_concurrent_items():
    calls: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        calls.append(list(items))
        return [2 * i for i in items]

    async def main():
        batcher = MicroBatcher(double, max_batch=4, max_wait_s=0.01)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.close()
        return results, batcher.batch_sizes

    results, sizes = asyncio.run(main())
    assert results == [2 * i for i in range(10)]
    assert sum(sizes) == 10 and max(sizes) <= 4 and len(sizes) <= 4


def test_microbatcher_reports_failure_to_every_waiting_item():
    def boom(items):
        raise RuntimeError("out of memory")

    async def main():
        batcher = MicroBatcher(boom, max_batch=8, max_wait_s=0.001)
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


def test_random_vocab_spelling():
    from mmie_pipe.train.tiny_encoder import wordpiece_vocab

    vocab = wordpiece_vocab(["Obama visits Paris", "Hello #world"])
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "##o" in vocab and "obama" in vocab and "#world" not in vocab
    random.shuffle(vocab)  # order does not matter to the check below
    assert len(set(vocab)) == len(vocab)
