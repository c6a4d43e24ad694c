"""Cache benchmark: a warm re-run of 1,000 records makes zero model calls and takes a small
fraction of the cold run. Real llama-server (SmolLM2), the shipped `ner` pipeline's stage.

    python benchmarks/bench_cache.py [--records 1000]
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
from mmie_pipe.runner import Runner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    data = write_jsonl(tmp / "in.jsonl", synthetic_posts(args.records))
    with embedded_server() as server:
        raw, _ = load_pipeline("ner", overrides=[f"backends.llm.base_url={server.base_url}", "stages.extract.params.max_tokens=32"])
        config = validate_pipeline(raw).config
        cache = GenerationCache(tmp / "cache.sqlite")
        timings = {}
        for phase in ("cold", "warm"):
            started = time.perf_counter()
            summary = asyncio.run(Runner(config, cache=cache).run(data, tmp / f"run-{phase}"))
            timings[phase] = {"seconds": time.perf_counter() - started, **summary.as_dict()}
    save("cache", {
        "records": args.records,
        "cold": timings["cold"], "warm": timings["warm"],
        "warm_model_calls": timings["warm"]["model_calls"],
        "warm_over_cold": timings["warm"]["seconds"] / timings["cold"]["seconds"],
        "target": "warm_model_calls == 0 and warm_over_cold < 0.05",
    })


if __name__ == "__main__":
    main()
