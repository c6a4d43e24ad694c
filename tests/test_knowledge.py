"""The `knowledge` stage (PGIM): prompt structure, example ids, input knowledge, pool checks."""

import asyncio

import pytest

from mmie_pipe.adapters.fake import FakeBackend, FakeConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.calls import ModelClient
from mmie_pipe.fewshot import load_pool
from mmie_pipe.errors import ConfigError, StageInputError
from mmie_pipe.records import Record
from mmie_pipe.stages.base import StageContext
from mmie_pipe.stages.knowledge import KnowledgeParams, KnowledgeStage


def _stage(reply="Named entities: 1. Kawhi Leonard (person). Reasoning: a player.\nText: more", **params):
    backend = FakeBackend(FakeConfig(reply=reply))
    client = ModelClient(backend, GenerationCache(enabled=False), stage="knowledge", stage_version=1)
    return KnowledgeStage(KnowledgeParams(**params), client, StageContext()), backend


def test_writes_knowledge_from_a_pgim_shaped_prompt_and_records_example_ids():
    stage, backend = _stage(selection="similar", similarity="tfidf")
    asyncio.run(stage.setup())
    record = Record(id="q", text="Kawhi Leonard wins Block of the Year", visual_context="person | basketball", caption="a player")
    asyncio.run(stage.process(record))
    prompt = backend.requests[0].prompt
    assert prompt.count("Text: ") == 6 and prompt.count("Question: ") == 6 and prompt.count("Answer: Named entities") == 5
    assert prompt.rstrip().endswith("Answer:") and "Image: person | basketball" in prompt  # visual context first
    assert backend.requests[0].sampling.stop == ("\n",)
    assert record.knowledge == "Named entities: 1. Kawhi Leonard (person). Reasoning: a player. Text: more"
    pool = {ex.id: ex for ex in load_pool("knowledge_tweets.v1")}
    assert len(record.examples) == 5 and all(pool[i].text in prompt for i in record.examples)
    assert record.provenance["knowledge"] == "knowledge.v1:fake"


def test_a_pool_example_is_never_its_own_shot():
    stage, backend = _stage(shots=13, selection="first")
    asyncio.run(stage.setup())
    record = Record(id="kx03", text="Morning coffee and a walk along the river before work")
    asyncio.run(stage.process(record))
    assert "kx03" not in record.examples and backend.requests[0].prompt.count("Morning coffee") == 1


def test_input_knowledge_is_kept_without_a_model_call():
    stage, backend = _stage(source="input")
    record = Record(id="q", text="x", knowledge="PGIM wrote this")
    asyncio.run(stage.process(record))
    assert record.knowledge == "PGIM wrote this" and not backend.requests
    with pytest.raises(StageInputError):
        asyncio.run(stage.process(Record(id="r", text="no knowledge here")))
    auto, backend = _stage(source="auto", shots=0)
    asyncio.run(auto.process(Record(id="r", text="no knowledge here")))
    assert len(backend.requests) == 1 and "Image: (no image description)" in backend.requests[0].prompt


def test_pool_without_answers_is_refused(tmp_path):
    stage, _ = _stage(examples="ner_tweets.v1")
    with pytest.raises(ConfigError, match="no `answer`"):
        asyncio.run(stage.setup())
