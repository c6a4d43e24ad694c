"""Shared fixtures. Tests never touch the user's cache: MMIE_CACHE_DIR points into a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MMIE_CACHE_DIR", str(tmp_path_factory.mktemp("mmie-cache")))


def data_root() -> Path | None:
    for candidate in (os.environ.get("MMIE_DATA_ROOT"), ROOT.parent / "shared" / "data"):
        if candidate and Path(candidate, "README.md").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("real data not found (set MMIE_DATA_ROOT or place shared/data beside the repo)")
    return root


@pytest.fixture(scope="session")
def llama_server():
    """One real llama.cpp server with the embedded SmolLM2 GGUF for the whole session."""
    from mmie_pipe.adapters.llama_server import LlamaServerProcess, find_server_binary, resolve_model_file
    from mmie_pipe.errors import MmieError

    try:
        find_server_binary()
        model = resolve_model_file("embedded:smollm2")
    except MmieError as exc:
        if os.environ.get("MMIE_REQUIRE_SERVER"):
            raise
        pytest.skip(f"llama-server or the embedded model is missing: {exc}")
    server = LlamaServerProcess(model, parallel=4, ctx_size=8192)
    server.start()
    yield server
    server.stop()
