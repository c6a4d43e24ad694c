"""The runtime for per-item methods: choice scoring, fan-out, roles, identities, entity checks.

Stage logic runs on the scripted `fake` backend here; the same paths against the real llama.cpp
server are in test_choices_server.py.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from pydantic import ValidationError

from mmie_pipe.adapters.fake import FakeBackend, FakeConfig
from mmie_pipe.adapters.transformers_backend import TransformersBackend, TransformersConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.calls import ModelClient, fan_out
from mmie_pipe.choices import (
    check_options,
    combine_pages,
    letters,
    option_of_token,
    pages,
    scores_from_likelihoods,
    scores_from_top_logprobs,
)
from mmie_pipe.errors import ParseError
from mmie_pipe.model_io import ModelRequest, Sampling
from mmie_pipe.pipeline import validate_pipeline
from mmie_pipe.records import Entity, Record, Relation


def client(tmp_path, responder=None, **config) -> tuple[ModelClient, FakeBackend]:
    backend = FakeBackend(FakeConfig(**config), responder)
    return ModelClient(backend, GenerationCache(tmp_path / "c.sqlite"), stage="t", stage_version=1), backend


# -- options and first-token scores ---------------------------------------------------------------


def test_letters_and_option_checks():
    assert letters(4) == ["A", "B", "C", "D"] and letters(52)[-1] == "z"
    with pytest.raises(ValueError):
        letters(53)
    check_options(["A", "B", "yes", "no"])
    for bad in (["A", "A"], ["yes", "YES"], ["PER", "PERSON"], ["A", " "], []):
        with pytest.raises(ValueError):
            check_options(bad)


def test_tokens_map_to_options():
    opts = ["A", "B", "C"]
    assert option_of_token(" A", opts) == "A" and option_of_token("B.", opts) == "B" and option_of_token("C)", opts) == "C"
    assert option_of_token(" a", opts) is None  # the article, not option A
    assert option_of_token(" The", opts) is None and option_of_token(" ", opts) is None
    words = ["person", "location"]
    assert option_of_token(" Person", words) == "person" and option_of_token("loc", words) == "location"


def test_first_token_scores_normalise_and_keep_outside_mass():
    top = {"A": math.log(0.5), " A": math.log(0.1), "B": math.log(0.2), " The": math.log(0.15)}
    s = scores_from_top_logprobs(top, ["A", "B", "C"])
    assert s.probs["A"] == pytest.approx(0.6 / 0.8) and s.probs["B"] == pytest.approx(0.2 / 0.8) and s.probs["C"] == 0
    assert sum(s.probs.values()) == pytest.approx(1.0)
    assert s.other_mass == pytest.approx(0.2) and s.unseen == ["C"] and s.best == "A"
    with pytest.raises(ParseError):
        scores_from_top_logprobs({" The": -0.1}, ["A", "B"])


def test_likelihood_scores_and_pages():
    s = scores_from_likelihoods([math.log(0.3), math.log(0.1)], ["A", "B"])
    assert s.probs["A"] == pytest.approx(0.75) and s.other_mass == pytest.approx(0.6)
    assert pages(list("ABCDE"), 2) == [["A", "B"], ["C", "D"], ["E"]]
    combined = combine_pages([{"x": 0.8, "y": 0.2}, {"z": 1.0}], {"x": 0.25, "z": 0.75}, ["x", "z"])
    assert combined == pytest.approx({"x": 0.2, "y": 0.05, "z": 0.75})


def test_choose_on_fake_backend_and_cache(tmp_path):
    c, backend = client(tmp_path, lambda r: {" B": 0.6, "A": 0.3, " hmm": 0.1})
    request = ModelRequest(prompt="Q? Answer:", sampling=Sampling(max_tokens=5))

    async def go():
        return await c.choose(request, ["A", "B"])

    first = asyncio.run(go())
    assert first.text == "B" and first.choice.probs["B"] == pytest.approx(2 / 3)
    assert first.choice.other_mass == pytest.approx(0.1)
    sent = backend.requests[0]
    assert sent.sampling.max_tokens == 1 and sent.top_logprobs == 20 and sent.constraint is None
    again = asyncio.run(go())  # the scored answer is cached with its distribution
    assert again.cached and again.choice == first.choice and len(backend.requests) == 1


# -- fan-out ----------------------------------------------------------------------------------------


def test_fan_out_collapses_duplicates_and_isolates_failures(tmp_path):
    def respond(request: ModelRequest) -> str:
        if "boom" in request.prompt:
            raise RuntimeError("server exploded")
        return "ok " + request.prompt

    c, backend = client(tmp_path, respond, delay_s=0.05)
    prompts = [f"q{i % 7}" for i in range(20)] + ["boom"]

    async def go():
        return await fan_out([c.generate(ModelRequest(prompt=p)) for p in prompts])

    outcomes = asyncio.run(go())
    assert len(backend.requests) == 8  # 7 distinct questions + the failing one
    assert c.stats.calls == 8 and c.stats.shared == 13
    assert [o.value.text for o in outcomes[:20]] == [f"ok q{i % 7}" for i in range(20)]
    assert not outcomes[-1].ok and "server exploded" in outcomes[-1].error
    assert all(o.ok for o in outcomes[:20])


def test_fan_out_lead_finishes_the_first_item_before_starting_the_rest():
    events: list[str] = []

    async def item(name: str, fail: bool = False) -> str:
        events.append(f"start {name}")
        await asyncio.sleep(0.01)
        events.append(f"end {name}")
        if fail:
            raise RuntimeError(f"{name} failed")
        return name

    async def go(lead: bool):
        events.clear()
        return await fan_out([item("a", fail=True), item("b"), item("c")], lead=lead)

    outcomes = asyncio.run(go(lead=True))
    assert events[:2] == ["start a", "end a"] and sorted(events[2:4]) == ["start b", "start c"]
    # The lead's failure stays on its item; the others still run.
    assert not outcomes[0].ok and "a failed" in outcomes[0].error
    assert [o.value for o in outcomes[1:]] == ["b", "c"]
    asyncio.run(go(lead=False))
    assert events[:3] == ["start a", "start b", "start c"]


def test_backend_survives_a_second_event_loop(tmp_path):
    c, _ = client(tmp_path, lambda r: "x", concurrency=2)
    for i in range(2):  # e.g. two bench cells, each its own asyncio.run
        out = asyncio.run(fan_out([c.generate(ModelRequest(prompt=f"{i}-{j}")) for j in range(5)]))
        assert all(o.ok for o in out)


# -- roles and capabilities --------------------------------------------------------------------------


def test_validate_checks_roles_against_backend_capabilities():
    raw = {
        "name": "x",
        "backends": {"llm": {"kind": "openai", "model": "m", "supports_json_schema": False}},
        "stages": [{"stage": "extract", "backend": "llm", "params": {"mode": "chat_json"}}],
    }
    report = validate_pipeline(raw)
    assert any("needs json_schema" in p and "'llm'" in p for p in report.problems), report.problems
    raw["stages"][0]["params"]["mode"] = "fewshot"
    assert validate_pipeline(raw).ok
    raw["stages"][0]["backends"] = {"vlm": "llm"}
    assert any("has no role vlm" in p for p in validate_pipeline(raw).problems)
    raw["stages"][0] = {"stage": "caption", "backend": "llm"}  # an image role on a text-only server
    raw["backends"]["llm"]["supports_images"] = False
    assert any("needs images" in p for p in validate_pipeline(raw).problems)


# -- identities ---------------------------------------------------------------------------------------


def test_retrained_adapter_of_same_size_changes_identity_and_key(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    (adapter / "adapter_config.json").write_text("{}")
    config = TransformersConfig(model=str(tmp_path / "base"), lora_modules={"rerank": str(adapter)})
    backend = TransformersBackend(config)
    cache = GenerationCache(tmp_path / "c.sqlite")
    c = ModelClient(backend, cache, stage="t", stage_version=1)
    request = ModelRequest(prompt="x", lora="rerank")
    before = c.key(request)
    import os
    import time

    weights.write_bytes(b"\x01" * 64)  # same size, new bytes (a retrained adapter)
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 1000))
    assert c.key(request) != before


# -- records -------------------------------------------------------------------------------------------


def test_predicted_entities_are_checked_against_the_text():
    text = "Obama visits Paris"
    Record(id="1", text=text, entities=[Entity(text="Paris", start=13, end=18, type="LOC")])
    with pytest.raises(ValidationError, match="not 'Paris'"):
        Record(id="1", text=text, entities=[Entity(text="Paris", start=0, end=5, type="LOC")])
    # an external prediction without offsets is allowed only for a string absent from the text
    Record(id="1", text=text, entities=[Entity(text="Barack Obama", type="PER")])
    with pytest.raises(ValidationError, match="has no offsets"):
        Record(id="1", text=text, entities=[Entity(text="Obama", type="PER")])
    record = Record(id="1", text=text)
    with pytest.raises(ValidationError):  # checked on assignment too, as stages write fields
        record.entities = [Entity(text="Obama", start=1, end=6, type="PER")]
    head, tail = Entity(text="Obama", start=0, end=5), Entity(text="Paris", start=13, end=18)
    rel = Relation(head=head, tail=tail, label="/per/loc/place_of_residence", label_probs={"x": 1.0})
    assert Record(id="1", text=text, relations=[rel]).relations[0].label_probs == {"x": 1.0}
    with pytest.raises(ValidationError):
        Entity(text="x", start=3)


def test_run_counters_add_up_events_and_tokens_over_actors():
    """The Ray driver sums each actor's running totals: call counters, stage events (MQA
    fallbacks, rerank counts) and per-model tokens, taking each actor's latest totals."""
    from mmie_pipe.calls import CallStats
    from mmie_pipe.distributed.worker import RunCounters, _counters
    from mmie_pipe.model_io import Usage

    def actor_stats(calls: int, fallbacks: int, prompt: int) -> dict[str, int]:
        stats = CallStats(calls=calls, usage=Usage(prompt_tokens=prompt))
        stats.count("choice_fallbacks", fallbacks)
        stats.add_usage("smollm2", Usage(prompt_tokens=prompt, completion_tokens=1), cached=False)
        return _counters(stats)

    run = CallStats()
    counters = RunCounters(run)
    counters.update(("a", 1), actor_stats(2, 1, 10))
    counters.update(("b", 1), actor_stats(3, 0, 20))
    counters.update(("a", 1), actor_stats(1, 1, 5))  # an older total arriving late changes nothing
    counters.update(("a", 1), actor_stats(4, 2, 40))
    assert run.calls == 7 and run.usage.prompt_tokens == 60
    assert run.events == {"choice_fallbacks": 2}
    assert run.spent_by_model["smollm2"].prompt_tokens == 60 and run.spent_by_model["smollm2"].completion_tokens == 2
