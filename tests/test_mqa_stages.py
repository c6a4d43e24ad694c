"""Stage logic of `spans`, `choice` and `relations` on the scripted fake backend (first-token
distributions given by the test); the same paths on the real server are in test_methods_server.py."""

import asyncio
import math

import pytest

from mmie_pipe.adapters.fake import FakeBackend, FakeConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.calls import CallStats, ModelClient
from mmie_pipe.data import load_split
from mmie_pipe.records import Entity, Record
from mmie_pipe.stages.base import StageContext
from mmie_pipe.stages.mqa import ChoiceParams, ChoiceStage, SpansParams, SpansStage
from mmie_pipe.stages.relations import RelationsParams, RelationsStage


def _client(responder, name):
    backend = FakeBackend(FakeConfig(delay_s=0.01), responder)  # calls overlap, as on a server
    stats = CallStats()
    return ModelClient(backend, GenerationCache(enabled=False), stage=name, stage_version=1, stats=stats), backend, stats


def test_spans_asks_one_question_per_type_and_maps_mentions():
    answers = {"person": "Messi, messi", "location": "Madrid.", "organization": "Barcelona, Real Madrid", "miscellaneous": "none"}
    client, backend, _ = _client(lambda r: next(v for k, v in answers.items() if f"List the {k} entities" in r.prompt.splitlines()[-2]), "spans")
    stage = SpansStage(SpansParams(), client, StageContext())
    record = Record(id="r", text="Messi scores as Barcelona beat Real Madrid in Madrid , Messi again")
    asyncio.run(stage.process(record))
    assert len(backend.requests) == 4 and all(r.sampling.max_tokens == 32 for r in backend.requests)
    assert [(s.text, s.start) for s in record.spans] == [("Messi", 0), ("Barcelona", 16), ("Real Madrid", 31), ("Madrid", 46), ("Messi", 55)]
    assert all(s.type is None for s in record.spans)


def _choice_stage(responder, **params):
    client, backend, stats = _client(responder, "choice")
    context = StageContext(stats=stats)
    return ChoiceStage(ChoiceParams(**params), client, context), backend, stats


def test_choice_keeps_type_probs_and_none_prob_and_drops_none_answers():
    def responder(request):
        if '"Messi"' in request.prompt:
            return {" A": 0.6, " B": 0.1, " C": 0.1, " D": 0.0, " E": 0.1, " the": 0.1}
        return {" E": 0.7, " A": 0.2, "\n": 0.1}  # none of the above

    stage, backend, _ = _choice_stage(responder)
    record = Record(id="r", text="Messi and Messi with friends",
                    spans=[Entity(text="Messi", start=0, end=5), Entity(text="Messi", start=10, end=15), Entity(text="friends", start=21, end=28)])
    asyncio.run(stage.process(record))
    assert len(backend.requests) == 2  # the repeated mention shares one call
    assert [(e.text, e.start, e.type) for e in record.entities] == [("Messi", 0, "PER"), ("Messi", 10, "PER")]
    entity = record.entities[0]
    assert math.isclose(entity.none_prob, 0.1 / 0.9) and math.isclose(sum(entity.type_probs.values()), 1.0)
    assert math.isclose(entity.type_probs["PER"], 0.6 / 0.8)


def test_unusable_answer_falls_back_to_none_and_is_counted():
    stage, _, stats = _choice_stage(lambda r: {" the": 0.7, "\n": 0.3})
    record = Record(id="r", text="Paris in spring", spans=[Entity(text="Paris", start=0, end=5)])
    asyncio.run(stage.process(record))
    assert record.entities == [] and stats.as_dict()["choice_fallbacks"] == 1


def test_none_first_and_lower_letters_are_read_correctly():
    stage, backend, _ = _choice_stage(lambda r: {" b": 0.9, " a": 0.1}, lettering="lower", none_position="first")
    record = Record(id="r", text="Paris in spring", spans=[Entity(text="Paris", start=0, end=5)])
    asyncio.run(stage.process(record))
    assert "a. none of the above" in backend.requests[0].prompt and record.entities[0].type == "PER"


def test_relations_types_arguments_then_asks_the_allowed_relations(shared_data):
    (record,) = list(load_split("mnre", "test", shared_data, limit=2))[1:2]  # Rafael Nadal / Mery Perello, couple

    def responder(request):
        lines = request.prompt.splitlines()
        if lines[-2].startswith("D. ") and "something else" in lines[-2]:
            return {" A": 0.8, " C": 0.2}  # a person
        assert "are a couple" in request.prompt and "was born in" not in request.prompt
        couple = next(l.split(".")[0] for l in lines if "are a couple" in l)
        return {f" {couple}": 0.5, " A": 0.3, " Z": 0.2}

    client, backend, stats = _client(responder, "relations")
    stage = RelationsStage(RelationsParams(), client, StageContext(stats=stats))
    asyncio.run(stage.process(record))
    (relation,) = record.relations
    assert relation.label == "/per/per/couple" and math.isclose(sum(relation.label_probs.values()), 1.0)
    assert len(backend.requests) == 3  # two typing questions, one relation question
    assert set(relation.label_probs) == {"/per/per/peer", "/per/per/couple", "/per/per/parent", "/per/per/siblings",
                                         "/per/per/alternate_names", "/per/per/alumi", "/per/per/charges", "/per/per/neighbor", "None"}


def test_relations_without_gold_pairs_is_a_record_error():
    from mmie_pipe.errors import StageInputError

    client, _, _ = _client(lambda r: "A", "relations")
    with pytest.raises(StageInputError):
        asyncio.run(RelationsStage(RelationsParams(), client, StageContext()).process(Record(id="r", text="x")))
