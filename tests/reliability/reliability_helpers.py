"""Shared helpers of the reliability suite (a module of its own: the name `conftest` is taken by
the top-level tests' conftest when both are imported)."""

from __future__ import annotations

import json
from pathlib import Path


def write_posts(path: Path, n: int, start: int = 1) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"r{i}", "text": f"Alice met Bob in Paris on day {i}"}) + "\n")
    return path


def read_predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
