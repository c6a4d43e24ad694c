"""Joining predictions to gold by id, error records, MRE scores, and the `eval` command."""

from __future__ import annotations

import json

import pytest

from mmie_pipe.cli import main
from mmie_pipe.metrics import RelationPair, evaluate, join_by_id, score_relations
from mmie_pipe.records import Entity, Gold, Record, Relation, StageError

TEXT = "Alice met Bob in Paris"


def span(text):
    start = TEXT.index(text)
    return Entity(text=text, start=start, end=start + len(text), type="PER")


def rel(head, tail, label):
    return Relation(head=span(head), tail=span(tail), label=label)


def gold_record(rid, entities=(), relations=()):
    return Record(id=rid, text=TEXT, gold=Gold(entities=list(entities), relations=list(relations)))


def test_join_is_by_id_not_position():
    gold = [gold_record("a", [span("Alice")]), gold_record("b", [span("Bob")])]
    preds = [Record(id="b", text=TEXT, entities=[span("Bob")]), Record(id="a", text=TEXT, entities=[span("Alice")])]
    result = evaluate(join_by_id(preds, gold), "mner")
    assert result.metrics["mner"].scores.micro.f1 == 1.0


def test_error_records_missing_and_unknown_predictions():
    gold = [gold_record("a", [span("Alice")]), gold_record("b", [span("Bob")]), gold_record("c", [span("Paris")])]
    preds = [
        Record(id="a", text=TEXT, entities=[span("Alice")], errors=[StageError(stage="ner", reason="timeout")]),
        Record(id="b", text=TEXT, entities=[span("Bob")]),
        Record(id="zzz", text=TEXT, entities=[span("Bob")]),
    ]
    joined = join_by_id(preds, gold)
    assert joined.counts() == {
        "records": 3,
        "error_records": 1,
        "missing_predictions": 1,
        "unknown_predictions": 1,
        "predictions_without_gold": 0,
    }
    micro = evaluate(joined, "mner").metrics["mner"].scores.micro
    assert (micro.tp, micro.n_pred, micro.n_gold) == (1, 1, 3)


def test_duplicate_prediction_ids_are_rejected():
    with pytest.raises(ValueError, match="more than once"):
        join_by_id([Record(id="a", text=TEXT), Record(id="a", text=TEXT)], [gold_record("a")])


def test_mre_micro_over_non_none_and_accuracy():
    pairs = [
        RelationPair("1", [rel("Alice", "Bob", "/per/per/peer")], [rel("Alice", "Bob", "/per/per/peer")]),
        RelationPair("2", [rel("Alice", "Bob", "/per/per/couple")], [rel("Alice", "Bob", "None")]),
        RelationPair("3", [], [rel("Bob", "Paris", "/per/loc/place_of_residence")]),
        RelationPair("4", [rel("Bob", "Paris", "None")], [rel("Bob", "Paris", "None")]),
        RelationPair("5", [], [rel("Alice", "Paris", "None")]),
    ]
    scores = score_relations(pairs).scores
    assert (scores.micro.tp, scores.micro.n_pred, scores.micro.n_gold) == (1, 2, 2)
    assert scores.micro.f1 == pytest.approx(0.5)
    # correct: 1 (peer), 4 (None=None), 5 (no prediction = None) -> 3 of 5
    assert scores.extra["accuracy"] == pytest.approx(3 / 5)
    assert scores.per_type["/per/per/couple"].n_pred == 1


def _write(path, records):
    path.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")


def test_eval_command_writes_metrics_and_lists_errors(tmp_path, capsys):
    gold = [gold_record("a", [span("Alice"), span("Bob")]), gold_record("b", [span("Paris")])]
    preds = [
        Record(id="b", text=TEXT, entities=[span("Paris")]),
        Record(id="a", text=TEXT, entities=[span("Alice"), span("Paris")]),
    ]
    _write(tmp_path / "gold.jsonl", gold)
    _write(tmp_path / "predictions.jsonl", preds)
    code = main(["eval", "--pred", str(tmp_path / "predictions.jsonl"), "--gold", str(tmp_path / "gold.jsonl"),
                 "--task", "mner", "--show-errors"])
    assert code == 0
    out = capsys.readouterr().out
    assert "unmatched predictions: 1" in out and "missed gold: 1" in out and "'Bob'" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metrics"]["mner"]["micro"]["tp"] == 2
    assert metrics["counts"]["gold_entities"] == 3


def test_eval_inline_gold_and_bad_line(tmp_path, capsys):
    pred = tmp_path / "p.jsonl"
    pred.write_text(gold_record("a", [span("Alice")]).model_dump_json() + "\n{not json\n", encoding="utf-8")
    assert main(["eval", "--pred", str(pred), "--task", "mner"]) == 2
    assert f"{pred}:2: invalid JSON" in capsys.readouterr().err


def test_eval_refuses_a_gold_file_with_no_common_id(tmp_path, capsys):
    _write(tmp_path / "g.jsonl", [gold_record("a")])
    _write(tmp_path / "p.jsonl", [Record(id="x", text=TEXT)])
    assert main(["eval", "--pred", str(tmp_path / "p.jsonl"), "--gold", str(tmp_path / "g.jsonl"), "--task", "mner"]) == 2
    assert "wrong --gold" in capsys.readouterr().err
