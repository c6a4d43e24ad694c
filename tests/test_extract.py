import asyncio

from mmie_pipe.adapters.fake import FakeBackend, FakeConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.calls import ModelClient
from mmie_pipe.records import Record
from mmie_pipe.stages.base import StageContext
from mmie_pipe.stages.extract import (
    DEFAULT_LABELS,
    ExtractEntities,
    ExtractParams,
    entities_from_answer,
    parse_fewshot_answer,
)


def test_parse_fewshot_answer():
    assert parse_fewshot_answer("Taylor Swift (PER); Nashville (LOC)\nTweet: more") == [("Taylor Swift", "PER"), ("Nashville", "LOC")]
    assert parse_fewshot_answer(" none") == []
    assert parse_fewshot_answer("Apple (ORG); garbage; (PER)") == [("Apple", "ORG")]
    assert parse_fewshot_answer("") == []


def test_entities_from_answer_maps_types_offsets_and_drops_hallucinations():
    text = "Paris Hilton visits Paris with Apple"
    pairs = [("Paris", "LOCATION"), ("Paris Hilton", "person"), ("Berlin", "LOC"), ("Apple", "COMPANY"), ("Apple", "ORG"), ("with", "VERB")]
    ents = entities_from_answer(text, pairs, DEFAULT_LABELS)
    spans = {(e.start, e.end, e.type) for e in ents}
    assert (0, 12, "PER") in spans and (31, 36, "ORG") in spans
    assert not any(e.text == "Berlin" for e in ents) and not any(e.text == "with" for e in ents)
    assert len(ents) == len({(e.start, e.end) for e in ents})  # a span is claimed once
    for e in ents:
        assert text[e.start : e.end] == e.text


def test_misc_maps_to_other_for_twitter2015_labels():
    labels = {"PER": "", "LOC": "", "ORG": "", "OTHER": ""}
    (ent,) = entities_from_answer("Watching the Oscars", [("Oscars", "MISC")], labels)
    assert ent.type == "OTHER"


def _stage(params, reply):
    backend = FakeBackend(FakeConfig(reply=reply))
    client = ModelClient(backend, GenerationCache(enabled=False), stage="extract", stage_version=1)
    return ExtractEntities(ExtractParams(**params), client, StageContext()), backend


def test_fewshot_prompt_has_examples_and_never_the_record_itself():
    stage, backend = _stage({"shots": 3, "selection": "similar"}, "Lionel Messi (PER)")
    record = Record(id="ex10", text="Lionel Messi scores twice as Barcelona win at the Camp Nou")
    asyncio.run(stage.process(record))
    prompt = backend.requests[0].prompt
    assert prompt.count("Tweet: ") == 4 and prompt.rstrip().endswith("Entities:")
    assert prompt.count("Lionel Messi scores twice") == 1  # only as the query, not as an example
    assert record.entities[0].text == "Lionel Messi"
    assert backend.requests[0].sampling.stop == ("\n",)


def test_similar_selection_puts_related_examples_in_prompt():
    stage, backend = _stage({"shots": 2, "selection": "similar"}, "none")
    asyncio.run(stage.process(Record(id="q", text="Google shares fall after weak earnings")))
    assert "Google and Microsoft shares fall" in backend.requests[0].prompt


def test_chat_json_mode_sends_schema_and_reasks_once(tmp_path):
    replies = iter(['{"entities": [{"text": "Rome"}]}', '{"entities": [{"text": "Rome", "type": "LOC"}]}'])
    backend = FakeBackend(FakeConfig(), responder=lambda r: next(replies))
    client = ModelClient(backend, GenerationCache(tmp_path / "c.sqlite"), stage="extract", stage_version=1)
    stage = ExtractEntities(ExtractParams(mode="chat_json", shots=1, context=["caption"]), client, StageContext())
    record = Record(id="1", text="Rome in spring", caption="a city square with a fountain")
    asyncio.run(stage.process(record))
    assert [(e.text, e.type) for e in record.entities] == [("Rome", "LOC")]
    first, second = backend.requests
    assert first.constraint.json_schema["properties"]["entities"]["items"]["properties"]["type"]["enum"] == list(DEFAULT_LABELS)
    assert "a city square with a fountain" in first.messages[0].content
    assert len(second.messages) == 3 and "could not be used" in second.messages[2].content
    assert client.stats.reasks == 1
