"""Memory benchmark: peak RSS of a run over 100,000 records vs 1,000 records, with a cached stage.

Each size runs in its own process against the real llama-server. Texts repeat every 100 records,
and a first run over 100 records fills the cache with their real generations; both measured runs
are then all cache hits, streaming every record through the full stage (prompt rendering, example
selection, cache lookup, parsing, writing), so the comparison isolates growth with input size.

    python benchmarks/bench_memory.py [--small 1000] [--large 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import embedded_server, peak_rss_mb, save, synthetic_posts, write_jsonl


def child(base_url: str, n: int, cache_path: str) -> None:
    from mmie_pipe.cache import GenerationCache
    from mmie_pipe.pipeline import load_pipeline, validate_pipeline
    from mmie_pipe.runner import Runner

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-mem-{n}-"))
    data = write_jsonl(tmp / "in.jsonl", synthetic_posts(n, distinct=100))
    raw, _ = load_pipeline("ner", overrides=[f"backends.llm.base_url={base_url}", "stages.extract.params.max_tokens=32"])
    started = time.perf_counter()
    summary = asyncio.run(Runner(validate_pipeline(raw).config, cache=GenerationCache(cache_path)).run(data, tmp / "run"))
    print(json.dumps({"records": n, "peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - started, **summary.as_dict()}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return
    cache_path = str(Path(tempfile.mkdtemp(prefix="bench-mem-cache-")) / "cache.sqlite")
    results = {}
    with embedded_server() as server:
        for n in (100, args.small, args.large):  # the first run only fills the cache
            out = subprocess.run([sys.executable, __file__, "--child", server.base_url, str(n), cache_path],
                                 check=True, capture_output=True, text=True).stdout
            results[n] = json.loads(out.strip().splitlines()[-1])
    save("memory", {
        "small": results[args.small], "large": results[args.large],
        "large_over_small_peak_rss": results[args.large]["peak_rss_mb"] / results[args.small]["peak_rss_mb"],
        "target": "large_over_small_peak_rss <= 1.2",
    })


if __name__ == "__main__":
    main()
