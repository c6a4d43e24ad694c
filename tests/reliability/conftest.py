"""Helpers for the reliability suite: each test reproduces one probe of docs/reliability.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmie_pipe.cli import main

# Small and fast on the embedded model: one demonstration, short answers.
FAST = ["--set", "stages.extract.params.shots=1", "--set", "stages.extract.params.max_tokens=16"]


def write_posts(path: Path, n: int, start: int = 1) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"r{i}", "text": f"Alice met Bob in Paris on day {i}"}) + "\n")
    return path


def read_predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def run_cli(llama_server, capsys):
    """`mmie-pipe run ner` on the session's real llama-server; returns (exit status, stdout, stderr)."""

    def run(input_path: Path, output: Path, *extra: str, base_url: str | None = None) -> tuple[int, str, str]:
        argv = ["run", "ner", "--input", str(input_path), "--output", str(output), "--no-progress",
                "--set", f"backends.llm.base_url={base_url or llama_server.base_url}", *FAST, *extra]
        status = main(argv)
        out = capsys.readouterr()
        return status, out.out, out.err

    return run
