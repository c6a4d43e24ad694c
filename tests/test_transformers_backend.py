"""The `transformers` backend with a tiny random-weight Llama and a LoRA adapter, on CPU."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from mmie_pipe.adapters.transformers_backend import TransformersBackend, TransformersConfig  # noqa: E402
from mmie_pipe.cache import GenerationCache  # noqa: E402
from mmie_pipe.calls import ModelClient  # noqa: E402
from mmie_pipe.errors import ModelCallError  # noqa: E402
from mmie_pipe.model_io import Constraint, Message, ModelRequest, Sampling  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def run(coro):
    return asyncio.run(coro)


def test_generate_chat_choices_logprobs_and_lora(tiny, tmp_path):
    base, lora = tiny
    backend = TransformersBackend(TransformersConfig(model=str(base), lora_modules={"tuned": str(lora)}, device="cpu"))
    client = ModelClient(backend, GenerationCache(tmp_path / "c.sqlite"), stage="t", stage_version=1)
    plain = ModelRequest(prompt="what is Paris", sampling=Sampling(max_tokens=5))

    async def go():
        return (
            await client.generate(plain),
            await client.generate(ModelRequest(messages=(Message(role="user", content="is the cat red"),), sampling=Sampling(max_tokens=5))),
            await client.generate(ModelRequest(prompt="is Rome a location", constraint=Constraint(choices=("yes", "no", "maybe")))),
            await client.generate(plain.model_copy(update={"top_logprobs": 3})),
            await client.generate(plain.model_copy(update={"lora": "tuned"})),
            await client.generate(plain),
        )

    text, chat, choice, with_logprobs, tuned, again = run(go())
    assert text.usage.completion_tokens == 5 and text.finish_reason == "length"
    assert chat.usage.prompt_tokens > text.usage.prompt_tokens  # the chat template wrapped the message
    assert choice.text in ("yes", "no", "maybe")
    assert set(choice.logprobs[0].top) == {"yes", "no", "maybe"}
    assert choice.logprobs[0].logprob == max(choice.logprobs[0].top.values())
    assert len(with_logprobs.logprobs) == 5 and all(len(t.top) == 3 for t in with_logprobs.logprobs)
    assert tuned.text != text.text  # the adapter changes the output
    assert again.cached and again.text == text.text
    assert backend.identity()["adapters"]["tuned"] != backend.identity()["revision"]


def test_unknown_adapter_is_a_clear_error(tiny, tmp_path):
    base, _ = tiny
    backend = TransformersBackend(TransformersConfig(model=str(base), device="cpu"))
    client = ModelClient(backend, GenerationCache(enabled=False), stage="t", stage_version=1)
    with pytest.raises(ModelCallError, match="no.*configured|none configured"):
        run(client.generate(ModelRequest(prompt="x", lora="missing")))


def test_missing_local_model_fails_without_network(tmp_path):
    backend = TransformersBackend(TransformersConfig(model=str(tmp_path / "nowhere"), device="cpu"))
    with pytest.raises(OSError):
        run(backend.start())


def test_choice_probabilities_in_one_batched_pass_match_per_option_scoring(tiny, tmp_path):
    """One forward pass over all options gives each option's exact log-likelihood (checked against
    scoring the options one by one), normalised over the options."""
    import math

    import torch

    base, _ = tiny
    backend = TransformersBackend(TransformersConfig(model=str(base), device="cpu"))
    client = ModelClient(backend, GenerationCache(tmp_path / "c.sqlite"), stage="t", stage_version=1)
    options = ["yes", "no", "red green", "Paris is"]
    request = ModelRequest(prompt="is Rome a location")
    calls = []
    forward = backend_forward = None

    async def go():
        nonlocal forward, backend_forward
        await backend.start()
        backend_forward = backend.model.forward

        def counting(*args, **kwargs):
            calls.append(kwargs["input_ids"].shape)
            return backend_forward(*args, **kwargs)

        backend.model.forward = counting
        return await client.choose(request, options)

    response = run(go())
    assert len(calls) == 1 and calls[0][0] == len(options)  # one pass, one row per option
    backend.model.forward = backend_forward
    tok, model = backend.tokenizer, backend.model
    prompt = tok(request.prompt, return_tensors="pt")["input_ids"]
    expected = []
    with torch.no_grad():
        for option in options:
            ids = tok(option, add_special_tokens=False, return_tensors="pt")["input_ids"]
            full = torch.cat([prompt, ids], dim=-1)
            logp = model(input_ids=full).logits[0, prompt.shape[-1] - 1 : -1].log_softmax(-1)
            expected.append(float(logp.gather(-1, ids[0].unsqueeze(-1)).sum()))
    norm = sum(math.exp(v) for v in expected)
    for option, value in zip(options, expected):
        assert response.choice.probs[option] == pytest.approx(math.exp(value) / norm, rel=1e-4)
    assert response.choice.method == "likelihood"
    assert response.choice.other_mass == pytest.approx(1 - norm, abs=1e-6)
    assert response.text == max(response.choice.probs, key=response.choice.probs.get)
