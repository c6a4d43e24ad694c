"""Helpers for the reliability suite: each test reproduces one probe of docs/reliability.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmie_pipe.cli import main
from reliability_helpers import read_predictions, write_posts  # noqa: F401 - used by fixtures

# Small and fast on the embedded model: one demonstration, short answers.
FAST = ["--set", "stages.extract.params.shots=1", "--set", "stages.extract.params.max_tokens=16"]


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
