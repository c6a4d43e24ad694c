"""The resume's repair step handles any bytes in predictions.jsonl and leaves it in input order."""

from __future__ import annotations

import asyncio

import pytest

from reliability_helpers import read_predictions, write_posts
from mmie_pipe.adapters.fake import FakeBackend, FakeConfig
from mmie_pipe.cache import GenerationCache
from mmie_pipe.pipeline import validate_pipeline
from mmie_pipe.runner import Runner

PIPELINE = {
    "name": "t",
    "backends": {"llm": {"kind": "fake"}},
    "stages": [{"stage": "extract", "backend": "llm", "params": {"shots": 0}}],
}

GARBAGE = {
    "nul bytes": b"\x00\x00\x00\x00garbage",
    "invalid utf-8": b'{"line": 2, "id": "\xff\xfe"}',
    "utf-16 looking": b"\xff\xfe{\x00}\x00",
    "json but not an object": b"[1, 2, 3]",
    "object without a line": b'{"id": "r9"}',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "cut short": b'{"id": "r3", "line": 3, "te',
}


def fake_runner(tmp_path):
    config = validate_pipeline(PIPELINE).config
    backend = FakeBackend(FakeConfig(reply="Alice (PER)"))
    return Runner(config, cache=GenerationCache(tmp_path / "cache.sqlite"), backends={"llm": backend})


@pytest.mark.parametrize("garbage", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_lines_in_predictions_are_repaired(tmp_path, garbage):
    source = write_posts(tmp_path / "in.jsonl", 5)
    out = tmp_path / "out"
    asyncio.run(fake_runner(tmp_path).run(source, out, progress=False))
    lines = (out / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    # Records 4 and 5 were lost in a crash that left garbage behind; garbage also in the middle.
    (out / "predictions.jsonl").write_bytes(lines[0] + garbage + b"\n" + lines[1] + lines[2] + garbage)
    summary = asyncio.run(fake_runner(tmp_path).run(source, out, progress=False))
    assert summary.skipped_done == 3 and summary.records == 2
    rows = read_predictions(out)
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5] and not any(r.get("errors") for r in rows)
    # and a second resume finds nothing left to do
    again = asyncio.run(fake_runner(tmp_path).run(source, out, progress=False))
    assert again.skipped_done == 5 and again.records == 0
