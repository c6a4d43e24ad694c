"""Concurrency benchmark on the real llama-server with 8 parallel slots, same prompts three ways:
1. sequential one-request-at-a-time loop (how the published research scripts call their LLM),
2. a bare concurrent AsyncOpenAI client (8 in flight), the ceiling for any client,
3. our pipeline (`ner` pipeline's extract stage through the runner, cache off).

    python benchmarks/bench_concurrency.py [--records 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import embedded_server, save, synthetic_posts, write_jsonl

from mmie_pipe.cache import GenerationCache
from mmie_pipe.pipeline import load_pipeline, validate_pipeline
from mmie_pipe.records import Record
from mmie_pipe.runner import Runner


async def bare_client(base_url: str, requests, concurrency: int) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    slots = asyncio.Semaphore(concurrency)

    async def one(req):
        async with slots:
            await client.completions.create(model="m", prompt=req.prompt, max_tokens=req.sampling.max_tokens,
                                            temperature=0, stop=list(req.sampling.stop), seed=0)

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=64)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-conc-"))
    rows = list(synthetic_posts(args.records))
    data = write_jsonl(tmp / "in.jsonl", rows)
    with embedded_server(parallel=8) as server:
        raw, _ = load_pipeline("ner", overrides=[f"backends.llm.base_url={server.base_url}", "runtime.cache=false"])
        config = validate_pipeline(raw).config
        runner = Runner(config, cache=GenerationCache(enabled=False))
        stage = runner.build_stages()[0]
        requests = [stage.build_request(Record(id=r["id"], text=r["text"])) for r in rows]
        # Warm the server (first requests pay for page faults and prompt cache set-up).
        asyncio.run(bare_client(server.base_url, requests[:8], 8))
        sequential = asyncio.run(bare_client(server.base_url, requests, 1))
        bare = asyncio.run(bare_client(server.base_url, requests, 8))
        started = time.perf_counter()
        asyncio.run(runner.run(data, tmp / "run"))
        pipeline = time.perf_counter() - started
    n = args.records
    save("concurrency", {
        "records": n, "server_slots": 8,
        "sequential_records_per_s": n / sequential,
        "bare_async_client_records_per_s": n / bare,
        "pipeline_records_per_s": n / pipeline,
        "pipeline_over_sequential": sequential / pipeline,
        "pipeline_over_bare_client": bare / pipeline,
        "target": "pipeline_over_sequential >= 2 and pipeline_over_bare_client >= 0.9",
    })


if __name__ == "__main__":
    main()
