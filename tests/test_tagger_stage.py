"""The `tagger` stage inside a pipeline run by the runner: entities with offsets and type
distributions on every record, batched across in-flight records, per-record input errors."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torchcrf")

from mmie_pipe.data import DataRootNotFound, load_split  # noqa: E402
from mmie_pipe.pipeline import PipelineConfig, load_pipeline, validate_pipeline  # noqa: E402
from mmie_pipe.records import Record  # noqa: E402
from mmie_pipe.runner import Runner  # noqa: E402
from mmie_pipe.train.data import DataSource  # noqa: E402
from mmie_pipe.train.tiny_encoder import save_tiny_encoder  # noqa: E402
from mmie_pipe.train.trainer import TrainSettings, train_tagger  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    try:
        records = list(load_split("twitter2017", "valid", knowledge="pgim", limit=16))
    except DataRootNotFound:
        pytest.skip("benchmark data not found (../shared/data)")
    folder = tmp_path_factory.mktemp("stage")
    encoder = save_tiny_encoder(folder / "encoder", [r.text + " " + (r.knowledge or "") for r in records])
    data = folder / "train.jsonl"
    data.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
    settings = TrainSettings(
        encoder=str(encoder), context_fields=["knowledge"], max_length=48, epochs=3, batch_size=4,
        lr_encoder=2e-3, lr_head=3e-2, warmup_ratio=0.0, threads=1, dropout=0.0,
    )
    train_tagger(settings, DataSource(str(data)), folder / "run", progress=False)
    return folder / "run" / "best", records


def test_stage_runs_in_a_pipeline(model_dir, tmp_path):
    best, records = model_dir
    posts = [r.model_dump(mode="json", exclude_none=True) for r in records[:10]]
    posts[3].pop("tokens")  # whitespace-split text instead
    posts[4]["text"] = "   "  # whitespace only: an input error on its record
    posts[4].pop("tokens")
    posts[4].pop("gold")
    posts[5]["tokens"] = ["tokens", "not", "in", "the", "text"]  # a per-record error; the run goes on
    input_path = tmp_path / "in.jsonl"
    input_path.write_text("".join(json.dumps(p) + "\n" for p in posts), encoding="utf-8")
    raw = {
        "name": "tagger-test",
        "inputs": ["knowledge"],
        "stages": [{"stage": "tagger", "params": {"model": str(best), "batch_size": 4, "max_wait_ms": 20}}],
        "runtime": {"batch_size": 8, "cache": False},
    }
    report = validate_pipeline(raw)
    assert report.ok, report.problems
    runner = Runner(PipelineConfig.model_validate(raw))
    summary = asyncio.run(runner.run(input_path, tmp_path / "out", progress=False))
    assert summary.records == 10 and summary.errors == 2
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    outputs = [Record.model_validate_json(line) if json.loads(line).get("text") else _input_error(line) for line in lines]
    assert [o.id for o in outputs] == [p["id"] for p in posts]
    for output in outputs:
        if output.line == 5:
            assert output.errors[0].kind == "input" and "whitespace" in output.errors[0].reason
            continue
        if output.line == 6:
            assert output.errors and "not found in text" in output.errors[0].reason
            continue
        assert output.entities is not None and output.provenance["entities"].startswith("tagger.v1:")
        for entity in output.entities:
            assert output.text[entity.start : entity.end] == entity.text
            assert sum(entity.type_probs.values()) == pytest.approx(1.0)
            assert max(entity.type_probs, key=entity.type_probs.get) == entity.type
    stage = runner.stages[0]
    assert max(stage.batcher.batch_sizes) > 1, "records in flight should share forward passes"
    assert sum(stage.batcher.batch_sizes) == 8


def test_shipped_pipeline_validates_with_a_model_override(model_dir):
    best, _ = model_dir
    raw, source = load_pipeline("pgim_tagger", overrides=[f"stages.tagger.params.model={best}"])
    report = validate_pipeline(raw, source)
    assert report.ok, report.problems


def _input_error(line: str) -> Record:
    """An input error's output line carries id, line and errors only; give it a text to validate."""
    return Record.model_validate({**json.loads(line), "text": "-"})
