"""Choice probabilities and fan-out against the real llama.cpp server (embedded SmolLM2 GGUF)."""

from __future__ import annotations

import asyncio

import pytest

from fault_proxy import FaultProxy
from mmie_pipe.adapters.openai_backend import OpenAIBackend, OpenAIConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.calls import ModelClient, fan_out
from mmie_pipe.errors import ConfigError
from mmie_pipe.model_io import Constraint, Message, ModelRequest, Sampling

pytestmark = pytest.mark.server

QUESTION = (
    "Tweet: Messi scores twice as Barcelona beat Madrid\n"
    "Question: what kind of entity is \"Barcelona\" in this tweet?\n"
    "A. a person\nB. a location\nC. an organization\nD. none of these\n"
    "Answer with one letter.\nAnswer:"
)


def make_client(base_url: str, tmp_path, flavor: str = "llamacpp", name: str = "c.sqlite") -> ModelClient:
    backend = OpenAIBackend(OpenAIConfig(model="smollm2", base_url=base_url, flavor=flavor))
    return ModelClient(backend, GenerationCache(tmp_path / name), stage="test", stage_version=1)


def test_choice_probabilities_sum_to_one_and_agree_with_constrained_answer(llama_server, tmp_path):
    c = make_client(llama_server.base_url, tmp_path)
    options = ["A", "B", "C", "D"]

    async def go():
        scored = await c.choose(ModelRequest(prompt=QUESTION), options)
        constrained = await c.generate(
            ModelRequest(prompt=QUESTION + " ", constraint=Constraint(choices=tuple(options)), sampling=Sampling(max_tokens=2))
        )
        chat = await c.choose(ModelRequest(messages=(Message(role="user", content=QUESTION),)), options)
        return scored, constrained, chat

    scored, constrained, chat = asyncio.run(go())
    for response in (scored, chat):
        probs = response.choice.probs
        assert set(probs) == set(options)
        assert sum(probs.values()) == pytest.approx(1.0)
        assert 0.0 <= response.choice.other_mass < 1.0
        assert response.text == max(probs, key=probs.get)
    # The grammar-constrained greedy answer is the option with the highest first-token probability.
    assert constrained.text.strip() == scored.text


def test_openai_flavor_answers_choice_completions(llama_server, tmp_path):
    """The OpenAI API has no completion constraint: choices are answered by first-token scores
    (this used to pass `response_format` to completions.create, a TypeError on every record)."""
    c = make_client(llama_server.base_url, tmp_path, flavor="openai")
    request = ModelRequest(prompt=QUESTION, constraint=Constraint(choices=("A", "B", "C", "D")))
    response = asyncio.run(c.generate(request))
    assert response.text in {"A", "B", "C", "D"}
    assert sum(response.choice.probs.values()) == pytest.approx(1.0)


def test_fan_out_sends_each_distinct_question_once(llama_server, tmp_path):
    spans = ["Messi", "Barcelona", "Madrid", "Messi", "Barcelona"] * 4  # 20 questions, 3 distinct
    with FaultProxy(llama_server.base_url.removesuffix("/v1")) as proxy:
        c = make_client(proxy.base_url + "/v1", tmp_path)

        async def go():
            return await fan_out([
                c.choose(ModelRequest(prompt=QUESTION.replace('"Barcelona"', f'"{s}"')), ["A", "B", "C", "D"])
                for s in spans
            ])

        outcomes = asyncio.run(go())
    assert all(o.ok for o in outcomes)
    assert proxy.requests == 3 and c.stats.calls == 3
    by_span = {s: o.value.choice.probs for s, o in zip(spans, outcomes)}
    assert all(by_span[s] == o.value.choice.probs for s, o in zip(spans, outcomes))


def test_one_failing_item_does_not_fail_the_others(llama_server, tmp_path):
    c = make_client(llama_server.base_url, tmp_path)
    good = [c.choose(ModelRequest(prompt=QUESTION), ["A", "B", "C", "D"]) for _ in range(3)]
    # A prompt longer than the server's context fails on the server (HTTP 400), for this item alone.
    bad = c.generate(ModelRequest(prompt="word " * 20000, sampling=Sampling(max_tokens=1)))
    outcomes = asyncio.run(fan_out([*good, bad]))
    assert [o.ok for o in outcomes] == [True, True, True, False]
    assert "HTTP 400" in outcomes[-1].error


def test_served_model_identity_and_mismatch(llama_server, tmp_path):
    backend = OpenAIBackend(OpenAIConfig(model="anything", base_url=llama_server.base_url, flavor="llamacpp"))
    asyncio.run(backend.start())
    assert backend.identity()["served"]["model_file"].endswith(".gguf")  # what the server loaded
    strict = OpenAIBackend(OpenAIConfig(model="not-served", base_url=llama_server.base_url, flavor="vllm"))
    with pytest.raises(ConfigError, match="not 'not-served'"):
        asyncio.run(strict.start())
