"""Shared set-up of the distributed tests: a pipeline file over latency-server replicas, an input
file, and reading a run's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from latency_server import MODEL


def write_pipeline(path: Path, urls: list[str], *, batch_size: int = 4, concurrency: int = 4,
                   cpus_per_replica: float = 0.5, cache_path: str | None = None) -> Path:
    runtime: dict = {"batch_size": batch_size, "ray": {"cpus_per_replica": cpus_per_replica}}
    if cache_path is not None:
        runtime["cache_path"] = cache_path
    spec = {
        "name": "sim",
        "backends": {"llm": {"kind": "openai", "model": MODEL, "base_urls": urls, "concurrency": concurrency,
                             "flavor": "llamacpp", "max_retries": 1}},
        "stages": [{"stage": "extract.v1", "backend": "llm",
                    "params": {"shots": 2, "selection": "first", "max_tokens": 16}}],
        "runtime": runtime,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def write_input(path: Path, n: int, *, bad_line_at: int | None = None, tag: str = "") -> Path:
    with path.open("w") as handle:
        for i in range(n):
            if bad_line_at is not None and i == bad_line_at:
                handle.write("{not json\n")
            handle.write(json.dumps({"id": f"p{i}", "text": f"Meeting Alice{tag}{i} in Paris, post {i}"}) + "\n")
    return path


def read_predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
