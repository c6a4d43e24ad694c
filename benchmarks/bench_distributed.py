"""Scaling of `--executor ray` over model replicas, simulated honestly: no GPU here, so each
replica is an OpenAI-compatible test server (tests/latency_server.py, in its own process) that
answers after a fixed latency with a fixed number of concurrent slots, as one GPU replica would.
What is measured is how well the executors keep N replicas busy, not model speed.

For N = 1, 2, 4, 8 replicas, the `sim` pipeline (the extract stage, one model call per record,
cache off) runs `records_per_replica * N` records with the local runner (one process, the openai
backend balancing over N base URLs) and with `--executor ray` (N actors on one local cluster).
Records/s are reported two ways: over the whole run (ray includes starting its actor pool, a
fixed cost of seconds) and while serving: records over the window from the first request any
replica received to the last answer any replica sent (read from the servers), which is what
scales with N. Each round runs every cell once, so a round's ratios
compare runs under the same machine load; `--repeat` rounds, and the minimum ratio is reported.
Target: ray at N replicas >= 0.85 x N x ray at one replica (while serving).

    python benchmarks/bench_distributed.py [--latency 1.0] [--slots 4] [--records-per-replica 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json

import httpx
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, save

sys.path.insert(0, str(ROOT / "tests"))

from distributed_helpers import write_input, write_pipeline  # noqa: E402

from mmie_pipe.distributed import RayExecutor  # noqa: E402
from mmie_pipe.pipeline import load_pipeline, validate_pipeline  # noqa: E402
from mmie_pipe.runner import Runner  # noqa: E402


def serving_window(urls: list[str]) -> float:
    """Seconds from the first request any replica started to the last it answered (and reset)."""
    stats = [httpx.get(url + "/stats").json() for url in urls]
    starts = [s["first_start"] for s in stats if s["first_start"]]
    ends = [s["last_end"] for s in stats if s["last_end"]]
    return max(ends) - min(starts) if starts and ends else 0.0


def config(path: Path, **runtime):
    raw, _ = load_pipeline(str(path))
    raw["runtime"].update(runtime, cache=False)
    return validate_pipeline(raw, str(path)).config


def one_cell(kind: str, urls: list[str], n: int, records: int, slots: int, folder: Path) -> dict:
    data = write_input(folder / f"in-{n}.jsonl", records)
    if kind == "local":  # one process keeps every replica's slots full
        pipe = write_pipeline(folder / f"local-{n}.yaml", urls, batch_size=2 * slots * n, concurrency=slots * n)
        runner = Runner(config(pipe))
    else:  # n actors, each keeping one replica's worth of requests in flight
        pipe = write_pipeline(folder / f"ray-{n}.yaml", urls, batch_size=2 * slots, concurrency=slots,
                              cpus_per_replica=0.25)
        runner = RayExecutor(config(pipe, executor="ray", ray={"replicas": n, "cpus_per_replica": 0.25}))
    out = folder / f"out-{kind}-{n}-{time.time_ns()}"
    serving_window(urls)  # reset
    started = time.perf_counter()
    summary = asyncio.run(runner.run(data, out))
    wall = time.perf_counter() - started
    assert summary.ok == records, summary.as_dict()
    serving = serving_window(urls)
    return {"records": records, "seconds": round(wall, 2), "records_per_s": round(records / wall, 2),
            "serving_seconds": round(serving, 2), "serving_records_per_s": round(records / serving, 2)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--latency", type=float, default=1.0)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--records-per-replica", type=int, default=32)
    p.add_argument("--replicas", default="1,2,4,8")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    counts = [int(x) for x in args.replicas.split(",")]
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "latency_server.py"), "--replicas", str(max(counts)),
                               "--latency", str(args.latency), "--slots", str(args.slots)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    all_urls = json.loads(server.stdout.readline())
    rounds = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.repeat):
                cells: dict[str, dict[str, dict]] = {"local": {}, "ray": {}}
                for n in counts:
                    for kind in ("local", "ray"):
                        cell = one_cell(kind, all_urls[:n], n, args.records_per_replica * n, args.slots, Path(tmp))
                        cells[kind][str(n)] = cell
                        print(f"round {r} {kind} n={n}: {cell}", flush=True)
                for kind in cells:
                    base = cells[kind][str(counts[0])]
                    for n in counts:
                        cell = cells[kind][str(n)]
                        cell["scaling_serving"] = round(cell["serving_records_per_s"] / (n * base["serving_records_per_s"]), 3)
                        cell["scaling_wall"] = round(cell["records_per_s"] / (n * base["records_per_s"]), 3)
                rounds.append(cells)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        ray.shutdown()
    minimum = {kind: {str(n): {k: min(rd[kind][str(n)][k] for rd in rounds) for k in ("scaling_serving", "scaling_wall",
                                                                                   "serving_records_per_s", "records_per_s")}
                      for n in counts} for kind in ("local", "ray")}
    ideal = args.slots / args.latency
    save("distributed", {
        "setup": {"latency_s": args.latency, "slots_per_replica": args.slots, "ideal_records_per_s_per_replica": ideal,
                  "records_per_replica": args.records_per_replica, "ray_local_cluster_cpus": 2, "actor_cpus": 0.25},
        "rounds": rounds,
        "minimum_over_rounds": minimum,
        "target": "ray serving scaling >= 0.85 at every N",
        "target_met": all(minimum["ray"][str(n)]["scaling_serving"] >= 0.85 for n in counts),
    })


if __name__ == "__main__":
    main()
