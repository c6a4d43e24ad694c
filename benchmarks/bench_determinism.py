"""How much llama-server's batching moves the `ner` results at temperature 0: the same Twitter-2017
test sample (seed 0) through the shipped `ner` pipeline, cache off, three times on one embedded
server: two fresh runs with 32 records in flight and one with 1 in flight (no batching).
Reports, for each run, micro F1 (exact span + type) and how many records' entity lists differ
from the first run's.

    python benchmarks/bench_determinism.py [--n 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from pathlib import Path

from common import embedded_server, save

from mmie_pipe.cache import GenerationCache
from mmie_pipe.data import load_split
from mmie_pipe.data.jsonl import iter_prediction_records, write_jsonl
from mmie_pipe.metrics import evaluate, join_by_id
from mmie_pipe.pipeline import load_pipeline, validate_pipeline
from mmie_pipe.runner import Runner


def entity_lists(path: Path) -> dict[str, list]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out[row["id"]] = [(e["start"], e["end"], e.get("type")) for e in row.get("entities") or []]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-det-"))
    sample = random.Random(args.seed).sample(list(load_split("twitter2017", "test")), args.n)
    data = tmp / "sample.jsonl"
    with data.open("w") as out:
        write_jsonl(sample, out)
    runs = {"batch32_a": 32, "batch32_b": 32, "batch1": 1}
    results = {}
    with embedded_server(parallel=8) as server:
        for name, batch in runs.items():
            raw, _ = load_pipeline("ner", overrides=[f"backends.llm.base_url={server.base_url}",
                                                     f"runtime.batch_size={batch}"])
            runner = Runner(validate_pipeline(raw).config, cache=GenerationCache(enabled=False))
            asyncio.run(runner.run(data, tmp / name, progress=False))
            scores = evaluate(join_by_id(iter_prediction_records(tmp / name / "predictions.jsonl")), "mner").to_dict()
            results[name] = {"micro_f1": scores["metrics"]["mner"]["micro"]["f1"]}
    first = entity_lists(tmp / "batch32_a" / "predictions.jsonl")
    for name in runs:
        other = entity_lists(tmp / name / "predictions.jsonl")
        results[name]["records_differing_from_batch32_a"] = sum(first[k] != other.get(k) for k in first)
    f1s = [r["micro_f1"] for r in results.values()]
    save("determinism", {"n": args.n, "seed": args.seed, "temperature": 0, "server_slots": 8, "runs": results,
                         "f1_spread": max(f1s) - min(f1s)})


if __name__ == "__main__":
    main()
