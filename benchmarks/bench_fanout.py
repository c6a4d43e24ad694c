"""Per-item questions through the fan-out, and one choice request per item vs one per option.

1. Server (real llama-server, 8 slots): R records x S spans, one multiple-choice question per span
   (one generated token, top-20 log-probabilities). `fan_out` + `ModelClient.choose` (cache off)
   against a bare concurrent AsyncOpenAI client sending the same requests with the same bound of
   requests in flight. Alternating, three rounds in one run; each round's ratio is reported.
2. transformers (a random-weight Llama of SmolLM2-135M's shape, CPU): a 5-option question scored in
   ONE batched forward pass (the backend) against one forward pass per option.

    python benchmarks/bench_fanout.py [--records 100 --spans 5 --rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import embedded_server, save, synthetic_posts

from mmie_pipe.adapters.openai_backend import OpenAIBackend, OpenAIConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.calls import ModelClient, fan_out
from mmie_pipe.choices import first_token_request
from mmie_pipe.model_io import ModelRequest

OPTIONS = ["A", "B", "C", "D", "E"]
CONCURRENCY = 8


def questions(records: int, spans: int) -> list[list[ModelRequest]]:
    out = []
    for row in synthetic_posts(records):
        words = [w for w in row["text"].split() if w[:1].isupper()] or row["text"].split()
        prefix = (f"Tweet: {row['text']}\nOptions: A. a person B. a location C. an organization "
                  "D. another named thing E. not a named entity\n")
        out.append([ModelRequest(prompt=f"{prefix}Mention: {words[i % len(words)]} #{i}\nAnswer:") for i in range(spans)])
    return out


async def bare(base_url: str, per_record: list[list[ModelRequest]]) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(req: ModelRequest):
        async with slots:
            await client.completions.create(model="m", prompt=req.prompt, max_tokens=1, temperature=0, logprobs=20, seed=0)

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for reqs in per_record for r in reqs))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


async def ours(base_url: str, per_record: list[list[ModelRequest]]) -> tuple[float, int]:
    backend = OpenAIBackend(OpenAIConfig(model="m", base_url=base_url, flavor="llamacpp", concurrency=CONCURRENCY))
    client = ModelClient(backend, GenerationCache(enabled=False), stage="bench", stage_version=1)

    async def record(reqs: list[ModelRequest]) -> None:
        outcomes = await fan_out([client.choose(r, OPTIONS) for r in reqs])
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:1]

    started = time.perf_counter()
    await asyncio.gather(*(record(reqs) for reqs in per_record))
    elapsed = time.perf_counter() - started
    await backend.close()
    return elapsed, client.stats.calls


def transformers_part(repeats: int = 20) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmie_pipe.adapters.transformers_backend import TransformersBackend, TransformersConfig

    root = Path(tempfile.mkdtemp(prefix="bench-tf-"))
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import build_tiny_llama

    base, _ = build_tiny_llama(root)
    # Replace the tiny weights by SmolLM2-135M's shape (30 layers, 576 wide), random weights.
    tiny = LlamaConfig.from_pretrained(base)
    shaped = LlamaConfig(vocab_size=tiny.vocab_size, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(shaped).save_pretrained(base, safe_serialization=True)
    backend = TransformersBackend(TransformersConfig(model=str(base), device="cpu", dtype="float32"))
    asyncio.run(backend.start())
    prompt = " ".join(["the cat is red and the dog is green ."] * 12) + " what is Paris"
    request = ModelRequest(prompt=prompt)
    options = ["person", "location", "yes", "no", "maybe"]
    tok, model = backend.tokenizer, backend.model

    def per_option() -> list[float]:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        out = []
        with torch.no_grad():
            for option in options:
                opt = tok(option, add_special_tokens=False, return_tensors="pt")["input_ids"]
                full = torch.cat([ids, opt], dim=-1)
                logp = model(input_ids=full).logits[0, ids.shape[-1] - 1 : -1].log_softmax(-1)
                out.append(float(logp.gather(-1, opt[0].unsqueeze(-1)).sum()))
        return out

    client = ModelClient(backend, GenerationCache(enabled=False), stage="bench", stage_version=1)
    scored = asyncio.run(client.choose(request, options))  # warm-up
    reference = per_option()
    rounds = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            asyncio.run(client.choose(request, options))
        batched = (time.perf_counter() - t0) / repeats
        t0 = time.perf_counter()
        for _ in range(repeats):
            per_option()
        looped = (time.perf_counter() - t0) / repeats
        rounds.append({"batched_s": batched, "per_option_s": looped, "speedup": looped / batched})
    best = max(options, key=lambda o: reference[options.index(o)])
    return {
        "model": "random Llama, SmolLM2-135M shape (30 layers, hidden 576)", "prompt_tokens": len(tok(prompt)["input_ids"]),
        "options": len(options), "forward_passes_batched": 1, "forward_passes_per_option": len(options),
        "same_answer": scored.text == best, "rounds": rounds, "min_speedup": min(r["speedup"] for r in rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--spans", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    per_record = questions(args.records, args.spans)
    rounds = []
    with embedded_server(parallel=CONCURRENCY) as server:
        asyncio.run(bare(server.base_url, per_record[:4]))  # warm the server
        for _ in range(args.rounds):
            b = asyncio.run(bare(server.base_url, per_record))
            o, calls = asyncio.run(ours(server.base_url, per_record))
            rounds.append({"bare_s": b, "fan_out_s": o, "fan_out_over_bare": b / o, "backend_calls": calls})
    n_questions = args.records * args.spans
    result = {
        "records": args.records, "questions_per_record": args.spans, "server_slots": CONCURRENCY,
        "questions": n_questions, "rounds": rounds,
        "fan_out_questions_per_s": [n_questions / r["fan_out_s"] for r in rounds],
        "min_fan_out_over_bare": min(r["fan_out_over_bare"] for r in rounds),
        "target": "fan_out_over_bare >= 0.9",
    }
    if not args.skip_transformers:
        result["transformers_choice"] = transformers_part()
    save("fanout", result)


if __name__ == "__main__":
    main()
