"""Concurrency benchmark on the real llama-server with 8 parallel slots, same prompts three ways:
1. sequential one-request-at-a-time loop (how the published research scripts call their LLM),
2. a bare concurrent AsyncOpenAI client (8 in flight), the ceiling for any client,
3. our pipeline (`ner` pipeline's extract stage through the runner, cache off).

The three are interleaved in each of `--repeat` rounds on one server, so each round's ratios
compare runs made under the same machine load; the result keeps every round and the minimum.

    python benchmarks/bench_concurrency.py [--records 64] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
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


def pipeline_run(config, data: Path, run_dir: Path, profile: bool) -> tuple[float, str]:
    runner = Runner(config, cache=GenerationCache(enabled=False))
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    asyncio.run(runner.run(data, run_dir, progress=False))
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    report = ""
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        report = out.getvalue()
    return elapsed, report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print where the pipeline's client time goes")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-conc-"))
    rows = list(synthetic_posts(args.records))
    data = write_jsonl(tmp / "in.jsonl", rows)
    n = args.records
    rounds = []
    with embedded_server(parallel=8) as server:
        raw, _ = load_pipeline("ner", overrides=[f"backends.llm.base_url={server.base_url}", "runtime.cache=false"])
        config = validate_pipeline(raw).config
        stage = Runner(config, cache=GenerationCache(enabled=False)).build_stages()[0]
        requests = [stage.build_request(Record(id=r["id"], text=r["text"])) for r in rows]
        # Warm the server (first requests pay for page faults and prompt cache set-up).
        asyncio.run(bare_client(server.base_url, requests[:8], 8))
        for i in range(args.repeat):
            sequential = asyncio.run(bare_client(server.base_url, requests, 1))
            bare = asyncio.run(bare_client(server.base_url, requests, 8))
            pipeline, report = pipeline_run(config, data, tmp / f"run{i}", args.profile)
            if report:
                print(report)
            rounds.append({
                "sequential_records_per_s": round(n / sequential, 2),
                "bare_async_client_records_per_s": round(n / bare, 2),
                "pipeline_records_per_s": round(n / pipeline, 2),
                "pipeline_over_sequential": round(sequential / pipeline, 3),
                "pipeline_over_bare_client": round(bare / pipeline, 3),
            })
            print(rounds[-1], flush=True)
    save("concurrency", {
        "records": n, "server_slots": 8, "rounds": rounds,
        "min_pipeline_over_bare_client": min(r["pipeline_over_bare_client"] for r in rounds),
        "min_pipeline_over_sequential": min(r["pipeline_over_sequential"] for r in rounds),
        "target": "pipeline_over_sequential >= 2 and pipeline_over_bare_client >= 0.9 (minimum over rounds)",
    })


if __name__ == "__main__":
    main()
