"""Loaders against the real benchmark files (skipped when the data root is absent)."""

from __future__ import annotations

import io
import json

import pytest

from data_fixtures import real_data_root
from mmie_pipe.data import DATASETS, load_pgim_examples, load_split
from mmie_pipe.data.jsonl import write_jsonl
from mmie_pipe.metrics import evaluate, join_by_id
from mmie_pipe.records import Record

SPLITS = [(name, split) for name, spec in DATASETS.items() for split in spec.splits]


@pytest.fixture(scope="module")
def root():
    return real_data_root()


@pytest.mark.parametrize(("dataset", "split"), SPLITS)
def test_every_split_loads_with_readme_counts(root, dataset, split):
    records = list(load_split(dataset, split, data_root=root))
    assert len(records) == DATASETS[dataset].expected_counts[split]
    assert len({r.id for r in records}) == len(records), "ids must be unique"
    for record in records:
        assert record.meta["dataset"] == dataset and record.meta["image_id"]
        for entity in record.gold.entities:
            assert record.text[entity.start : entity.end] == entity.text


def test_gold_entity_counts_and_bio_rules(root):
    def count(dataset, split, rule):
        return sum(len(r.gold.entities) for r in load_split(dataset, split, data_root=root, rule=rule))

    # The README's two conventions for Twitter-2015 test.
    assert count("twitter2015", "test", "strict") == 5072
    assert count("twitter2015", "test", "conlleval") == 5207
    # Twitter-2017 has no stray I- spans: both rules agree.
    assert count("twitter2017", "test", "strict") == count("twitter2017", "test", "conlleval") == 1351


def test_gmner_boxes(root):
    boxes = groundable = entities = 0
    for split in ("train", "dev", "test"):
        for record in load_split("gmner", split, data_root=root):
            assert "unmatched_box_names" not in record.meta
            for entity in record.gold.entities:
                entities += 1
                assert entity.groundable is bool(entity.boxes)
                groundable += entity.groundable
            # Each distinct (entity string) carries that string's boxes once.
            boxes += sum(len(e.boxes) for e in {e.text: e for e in record.gold.entities}.values())
    assert entities == 11779 + 2450 + 2543
    assert boxes == 8058  # every <object> of the 5,612 xml files lands on an entity
    assert groundable == 4733 + 991 + 1046


def test_mnre_pairs(root):
    records = list(load_split("mnre", "test", data_root=root))
    labels = {r.gold.relations[0].label for r in records}
    assert "None" in labels
    record = records[0]
    (relation,) = record.gold.relations
    assert relation.head.type is None and relation.tail.type is None
    assert record.text[relation.head.start : relation.head.end] == "Crocodile"
    assert record.meta["image_id"].endswith(".jpg")


@pytest.mark.parametrize(("dataset", "split"), [("gmner", "test"), ("mnre", "val"), ("twitter2015", "valid")])
def test_converted_jsonl_round_trips(root, dataset, split):
    records = list(load_split(dataset, split, data_root=root))
    buffer = io.StringIO()
    write_jsonl(records, buffer)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == len(records)
    for line, original in zip(lines, records):
        data = json.loads(line)
        assert data["image"] is None and data["meta"]["image_id"]
        back = Record.model_validate(data)
        assert back.gold == original.gold
        assert back.text == " ".join(back.tokens)


@pytest.mark.parametrize(("dataset", "split", "task"), [("gmner", "test", "gmner"), ("twitter2017", "test", "mner"), ("mnre", "test", "mre")])
def test_gold_scored_against_itself_is_perfect(root, dataset, split, task):
    records = []
    for record in load_split(dataset, split, data_root=root):
        record.entities = record.gold.entities
        record.relations = record.gold.relations
        records.append(record)
    result = evaluate(join_by_id(records), task)
    for name, metric in result.metrics.items():
        assert metric.scores.micro.f1 == 1.0, name
        if "accuracy" in metric.scores.extra:
            assert metric.scores.extra["accuracy"] == 1.0
    for mode in ("string",):
        assert all(m.scores.micro.f1 == 1.0 for m in evaluate(join_by_id(records), task, mode).metrics.values())


def test_captions_cover_their_datasets(root, caplog):
    blip = list(load_split("twitter2017", "test", data_root=root, captions="blip2"))
    assert all(r.caption for r in blip) and blip[0].provenance["caption"] == "blip2"
    owl = list(load_split("gmner", "test", data_root=root, captions="owl"))
    assert sum(r.caption is None for r in owl) <= 1  # the owl file has 1,499 captions for 1,500 tweets
    multi_line = [r.caption for r in owl if r.caption and "\n" in r.caption]
    assert multi_line, "owl captions span several lines"
    assert not any("imgid:" in (r.caption or "") for r in owl)


def test_pgim_knowledge_aligned_by_tokens(root):
    # The 2015 zip lacks the last tweet of each split; only that tweet may go without knowledge,
    # and the one before it must still get its own knowledge (no positional shift).
    records = list(load_split("twitter2015", "valid", data_root=root, knowledge="pgim"))
    missing = [i for i, r in enumerate(records) if r.knowledge is None]
    assert missing == [len(records) - 1]
    first = records[0]
    assert first.knowledge.startswith("Named entities:")
    assert all("<EOS>" not in r.knowledge and "\r" not in r.knowledge for r in records[:-1])
    # The tweet before the missing one keeps its own knowledge: it names the tweet's entity.
    second_last = records[-2]
    assert any(e.text.split()[0] in second_last.knowledge for e in second_last.gold.entities) or not second_last.gold.entities
    records17 = list(load_split("twitter2017", "test", data_root=root, knowledge="pgim"))
    assert all(r.knowledge for r in records17)


def test_pgim_example_pools(root):
    for year, expected in (("2015", 123), ("2017", 202)):
        folder = root / "knowledge" / "pgim_examples" / year
        pool = list(load_pgim_examples(folder / "pool_answers.txt", folder / "pool_labels.txt"))
        assert len(pool) == expected
        assert all(ex.answer.startswith("Named entities") for ex in pool)
        assert all(kind for ex in pool for _, kind in ex.labels)
    first = next(load_pgim_examples(root / "knowledge/pgim_examples/2015/pool_answers.txt",
                                    root / "knowledge/pgim_examples/2015/pool_labels.txt"))
    assert first.image_id == "563049"
    assert first.labels == [("Smash Shiba", "PER"), ("Melee Grand Finals", "OTHER")]
