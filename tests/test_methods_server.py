"""PGIM knowledge and MQA on the real embedded model (SmolLM2-135M on llama-server): the choice
probability path, and end-to-end runs of `pgim`, `mqa` and `mqa-mre` asserting well-formed output
and counts (never quality: a 135M model's answers are not the point here)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from mmie_pipe.cache import GenerationCache
from mmie_pipe.data import load_split
from mmie_pipe.data.jsonl import write_jsonl
from mmie_pipe.metrics import evaluate, join_by_id
from mmie_pipe.data.jsonl import iter_prediction_records
from mmie_pipe.pipeline import load_pipeline, validate_pipeline
from mmie_pipe.records import Record
from mmie_pipe.runner import Runner

pytestmark = pytest.mark.server

POSTS = [
    {"id": "p1", "text": "Lionel Messi scores twice as Barcelona beat Real Madrid in Madrid",
     "caption": "a soccer player celebrating on a field"},
    {"id": "p2", "text": "RT @NASA : Scott Kelly is back on Earth", "caption": "an astronaut smiling"},
    {"id": "p3", "text": "Morning coffee before work", "caption": "a cup of coffee on a table"},
]


def _run(pipeline: str, server, rows, tmp_path: Path, overrides=()):
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    raw, source = load_pipeline(pipeline, overrides=[f"backends.llm.base_url={server.base_url}",
                                                      "backends.llm.timeout_s=600", *overrides])
    report = validate_pipeline(raw, source)
    assert report.ok, report.problems
    runner = Runner(report.config, cache=GenerationCache(tmp_path / "cache.sqlite"))
    summary = asyncio.run(runner.run(data, tmp_path / "run", progress=False))
    out = [Record.model_validate(json.loads(line)) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    return summary, out, runner


def test_choice_question_reads_answer_and_distribution_from_one_call(llama_server, tmp_path):
    from mmie_pipe.stages.mqa import ChoiceParams, ChoiceStage

    summary, out, runner = _run("mqa", llama_server, POSTS[:1], tmp_path, ["stages.spans.params.types={PER: person}"])
    (record,) = out
    assert not record.errors, record.errors
    choice = next(s for s in runner.stages if s.name == "choice")
    # one spans call (one type) + exactly one call per distinct span text
    assert summary.calls.calls == 1 + len({s.text for s in record.spans})
    for entity in record.entities:
        assert record.text[entity.start : entity.end] == entity.text
        assert set(entity.type_probs) == set(ChoiceParams().types)
        assert math.isclose(sum(entity.type_probs.values()), 1.0, rel_tol=1e-6)
        assert 0 <= entity.none_prob < 1 and entity.type == max(entity.type_probs, key=entity.type_probs.get)
    assert isinstance(choice, ChoiceStage)


def test_mqa_end_to_end(llama_server, tmp_path):
    summary, out, _ = _run("mqa", llama_server, POSTS, tmp_path, ["stages.spans.params.shots=2", "stages.choice.params.shots=2"])
    assert [r.id for r in out] == ["p1", "p2", "p3"] and summary.errors == 0, [r.errors for r in out]
    for record in out:
        assert record.spans is not None and record.entities is not None and len(record.examples) >= 1
        assert {(e.start, e.end) for e in record.entities} <= {(s.start, s.end) for s in record.spans}
        for span in record.spans:
            assert record.text[span.start : span.end] == span.text and span.type is None
    fallbacks = summary.calls.as_dict().get("choice_fallbacks", 0)
    assert summary.calls.calls >= 3 * 4 + fallbacks  # four span questions per post, at least
    # a warm re-run is served from the cache
    again, _, _ = _run("mqa", llama_server, POSTS, tmp_path, ["stages.spans.params.shots=2", "stages.choice.params.shots=2"])
    assert again.skipped_done == 3


def test_pgim_end_to_end(llama_server, tmp_path):
    summary, out, _ = _run("pgim", llama_server, POSTS[:2], tmp_path,
                           ["stages.knowledge.params.shots=2", "stages.knowledge.params.max_tokens=48", "stages.extract.params.shots=2"])
    assert summary.errors == 0, [r.errors for r in out]
    for record in out:
        assert isinstance(record.knowledge, str) and record.provenance["knowledge"].startswith("knowledge.v1:")
        assert record.visual_context and record.entities is not None and len(record.examples) >= 2
    assert summary.calls.calls == 4  # one knowledge and one extraction call per post


def test_mqa_mre_end_to_end_and_scored(llama_server, shared_data, tmp_path):
    rows = [json.loads(r.model_dump_json(exclude_none=True)) for r in load_split("mnre", "test", shared_data, limit=3)]
    summary, out, _ = _run("mqa-mre", llama_server, rows, tmp_path)
    assert summary.errors == 0, [r.errors for r in out]
    table_labels = set(__import__("mmie_pipe.stages.relations", fromlist=["x"]).load_relation_table("mnre.v1").labels)
    for record in out:
        (relation,) = record.relations
        gold = record.gold.relations[0]
        assert (relation.head.start, relation.tail.start) == (gold.head.start, gold.tail.start)
        assert relation.label in table_labels and math.isclose(sum(relation.label_probs.values()), 1.0, rel_tol=1e-6)
    scores = evaluate(join_by_id(iter_prediction_records(tmp_path / "run" / "predictions.jsonl")), "mre").to_dict()
    assert scores["metrics"]["mre"]["accuracy_support"] == 3
