"""Shared bits of the benchmarks: a real llama-server on loopback, inputs, result files."""

from __future__ import annotations

import json
import platform
import random
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

TEXTS = [
    "Fans in {city} cheer as the {team} win game {i}",
    "{person} arrives in {city} for the summit with {org} leaders",
    "Traffic jam near {city} airport again this morning #{i}",
    "New album from {person} drops on Friday , listening party in {city}",
]
CITIES = ["Boston", "Paris", "Tokyo", "Lagos", "Lima", "Oslo", "Delhi", "Cairo"]
TEAMS = ["Red Sox", "Lakers", "Arsenal", "Yankees"]
PEOPLE = ["Angela Merkel", "Taylor Swift", "Lionel Messi", "Barack Obama"]
ORGS = ["NATO", "UNICEF", "Google", "the EU"]


def synthetic_posts(n: int, distinct: int | None = None, seed: int = 0):
    """`n` posts; with `distinct`, texts repeat every `distinct` posts (so later ones hit the cache)."""
    rng = random.Random(seed)
    pool = []
    for i in range(distinct or n):
        pool.append(rng.choice(TEXTS).format(city=rng.choice(CITIES), team=rng.choice(TEAMS),
                                              person=rng.choice(PEOPLE), org=rng.choice(ORGS), i=i))
    for i in range(n):
        yield {"id": f"p{i}", "text": pool[i % len(pool)]}


def write_jsonl(path: Path, rows) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


@contextmanager
def embedded_server(parallel: int = 8, ctx_size: int = 16384):
    from mmie_pipe.adapters.llama_server import LlamaServerProcess, resolve_model_file

    server = LlamaServerProcess(resolve_model_file("embedded:smollm2"), parallel=parallel, ctx_size=ctx_size)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.platform(),
              "cpus": __import__("os").cpu_count(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return path
