"""Runs a validated pipeline over a JSONL file: streaming, bounded in-flight records, ordered
writes as records complete, per-record errors, resume, progress and a run manifest."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pydantic import ValidationError

from . import registry
from .adapters.base import Backend
from .cache import GenerationCache
from .calls import CallStats, ModelClient
from .errors import ConfigError, MmieError, ModelCallError, StageInputError
from .manifest import RunManifest
from .pipeline import PipelineConfig, role_bindings
from .records import Record, StageError
from .stages.base import Stage, StageContext

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"


class StrictModeError(MmieError):
    """Raised under --strict at the first record error (after that record is written)."""


@dataclass
class RunSummary:
    records: int = 0
    ok: int = 0
    errors: int = 0
    skipped_done: int = 0
    errors_by_stage: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    calls: CallStats = field(default_factory=CallStats)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "ok": self.ok,
            "errors": self.errors,
            "resumed_skipped": self.skipped_done,
            "errors_by_stage": self.errors_by_stage,
            "seconds": round(self.seconds, 3),
            **self.calls.as_dict(),
        }


@dataclass
class InputLine:
    line: int
    record: Record | None
    error: str | None = None
    raw_id: str | None = None


def _resolve_image(image: str | None, base_dir: Path) -> str | None:
    """Relative image paths are relative to the input file, so a data set can move as a folder."""
    if not image or "://" in image or Path(image).is_absolute():
        return image
    return str(base_dir / image)


def read_input(path: Path) -> Iterator[InputLine]:
    """Stream the input; a bad line becomes an `InputLine` with an error, never an exception."""
    base_dir = path.resolve().parent
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                yield InputLine(number, None, f"malformed JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(data, dict):
                yield InputLine(number, None, f"expected a JSON object, got {type(data).__name__}")
                continue
            raw_id = str(data.get("id")) if data.get("id") is not None else None
            if isinstance(data.get("image"), str):
                data["image"] = _resolve_image(data["image"], base_dir)
            try:
                yield InputLine(number, Record.model_validate({**data, "line": number, "errors": []}), raw_id=raw_id)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors()
                )
                yield InputLine(number, None, f"invalid record: {problems}", raw_id=raw_id)


def error_output(item: InputLine) -> dict[str, Any]:
    return {
        "id": item.raw_id or f"line-{item.line}",
        "line": item.line,
        "errors": [StageError(stage="input", reason=item.error or "unknown", line=item.line, kind="input").model_dump()],
    }


def record_output(record: Record) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude_none=True)


class Progress:
    """tqdm on a terminal, silent otherwise (CI logs stay readable)."""

    def __init__(self, enabled: bool | None, summary: RunSummary, total: int | None):
        self.summary = summary
        self.bar = None
        if enabled is None:
            enabled = sys.stderr.isatty() and not os.environ.get("CI")
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="rec", dynamic_ncols=True)

    def update(self) -> None:
        if self.bar is None:
            return
        c = self.summary.calls
        self.bar.update(1)
        self.bar.set_postfix(
            hits=c.cache_hits, errors=self.summary.errors, tokens=c.usage.prompt_tokens + c.usage.completion_tokens, refresh=False
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Runner:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        cache: GenerationCache | None = None,
        backends: dict[str, Backend] | None = None,
    ):
        self.config = config
        self.stats = CallStats()
        self.cache = cache or GenerationCache(config.runtime.cache_path, enabled=config.runtime.cache)
        self.context = StageContext(seed=config.runtime.seed, cache=self.cache, stats=self.stats)
        self._external_backends = backends or {}
        self.backends: dict[str, Backend] = {}
        self.stages: list[Stage] = []

    # -- construction -------------------------------------------------------------------------
    def _backend(self, role: str) -> Backend:
        if role in self._external_backends:
            return self._external_backends[role]
        if role not in self.backends:
            spec = self.config.backends[role]
            self.backends[role] = registry.backends.build(spec["kind"], spec)
        return self.backends[role]

    def build_stages(self) -> list[Stage]:
        if self.stages:
            return self.stages
        for spec in self.config.stages:
            cls = registry.stages.get(spec.stage)
            params = cls.Params.model_validate(spec.params)
            try:
                bound = role_bindings(spec, cls)
            except ConfigError as exc:
                raise ConfigError(f"stage {spec.stage}: {exc}") from exc
            missing = [r for r, role in cls.roles.items() if role.required and r not in bound]
            if missing:
                raise ConfigError(f"stage {spec.stage} needs a backend for role {', '.join(missing)}")
            clients = {
                role: ModelClient(self._backend(name), self.cache, stage=cls.name, stage_version=cls.version, stats=self.stats)
                for role, name in bound.items()
            }
            stage = cls(params, clients.get(cls.primary_role() or ""), self.context)
            stage.bind_models(clients)
            self.stages.append(stage)
        return self.stages

    def all_backends(self) -> dict[str, Backend]:
        return {**self.backends, **self._external_backends}

    async def start(self) -> None:
        self.build_stages()
        for backend in self.backends.values():  # external backends are started by their owner
            await backend.start()
        for stage in self.stages:
            await stage.setup()

    async def close(self) -> None:
        for stage in self.stages:
            await stage.teardown()
        for backend in self.backends.values():
            await backend.close()

    # -- per record ---------------------------------------------------------------------------
    async def process(self, record: Record) -> Record:
        failed_fields: set[str] = set()
        for stage in self.stages:
            blocked = [f for f in stage.reads if f in failed_fields]
            if blocked:
                continue  # the upstream error already explains why this record lacks it
            try:
                await stage.process(record)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a per-record error
                record.errors.append(
                    StageError(stage=stage.qualified_name, reason=_reason(exc), line=record.line, kind=_kind(exc))
                )
                failed_fields |= set(stage.writes)
                if not isinstance(exc, (MmieError, ValueError, OSError, KeyError, TypeError)):
                    log.debug("unexpected error in %s", stage.qualified_name, exc_info=exc)
        return record

    # -- whole run ----------------------------------------------------------------------------
    async def run(
        self,
        input_path: Path,
        output_dir: Path,
        *,
        limit: int | None = None,
        strict: bool = False,
        progress: bool | None = None,
        source: str = "",
        overwrite: bool = False,
    ) -> RunSummary:
        summary = RunSummary(calls=self.stats)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.context.run_dir = output_dir
        manifest = RunManifest.open(output_dir, self.config, source=source, input_path=input_path, overwrite=overwrite)
        predictions = output_dir / PREDICTIONS
        done: dict[int, str] = {}
        if predictions.exists() and not overwrite:
            _cut_partial_tail(predictions)
            done = _finished_records(predictions)
        if overwrite and predictions.exists():
            predictions.unlink()
        resumed = predictions.exists() and predictions.stat().st_size > 0
        started = time.perf_counter()
        bar = Progress(progress, summary, limit)
        window: deque[asyncio.Task[Record] | dict[str, Any]] = deque()
        in_flight = self.config.runtime.batch_size
        try:
            await self.start()  # inside the try: a backend that started is closed if another fails
            manifest.record_start(self.stages, self.all_backends(), self.context)
            with predictions.open("a", encoding="utf-8") as out:

                def write(item: Record | dict[str, Any]) -> None:
                    data = item if isinstance(item, dict) else record_output(item)
                    out.write(json.dumps(data, ensure_ascii=False) + "\n")
                    summary.records += 1
                    if data.get("errors"):
                        summary.errors += 1
                        for err in data["errors"]:
                            summary.errors_by_stage[err["stage"]] = summary.errors_by_stage.get(err["stage"], 0) + 1
                    else:
                        summary.ok += 1
                    bar.update()
                    if strict and data.get("errors"):
                        out.flush()
                        raise StrictModeError(f"line {data.get('line')}: {data['errors'][0]['reason']}")

                async def drain(keep: int) -> None:
                    while len(window) > keep:
                        head = window.popleft()
                        write(head if isinstance(head, dict) else await head)
                    out.flush()

                seen = 0
                for item in read_input(input_path):
                    if limit is not None and seen >= limit:
                        break
                    seen += 1
                    if done.get(item.line) is not None and done[item.line] == (item.record.id if item.record else None):
                        summary.skipped_done += 1
                        continue
                    window.append(error_output(item) if item.record is None else asyncio.ensure_future(self.process(item.record)))
                    if len(window) >= in_flight:
                        await drain(in_flight // 2)
                await drain(0)
        finally:
            for pending in window:
                if isinstance(pending, asyncio.Task):
                    pending.cancel()
            bar.close()
            summary.seconds = time.perf_counter() - started
            await self.close()
            manifest.record_end(summary, self.context)
        if resumed:
            _drop_superseded(predictions)
        return summary


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, MmieError) else f"{type(exc).__name__}: {text}"


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ModelCallError):
        return "model"
    if isinstance(exc, StageInputError) and "image" in str(exc).lower():
        return "image"
    return "stage"


def _cut_partial_tail(predictions: Path) -> None:
    """Drop a last line cut short by an interruption, so appended records start on a new line."""
    with predictions.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        chunk = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - chunk)
            handle.seek(start)
            block = handle.read(pos - start)
            newline = block.rfind(b"\n")
            if newline != -1:
                handle.truncate(start + newline + 1)
                return
            pos = start
        handle.truncate(0)


def _finished_records(predictions: Path) -> dict[int, str]:
    """line -> id of records already written without error (an interrupted write is ignored)."""
    done: dict[int, str] = {}
    with predictions.open("r", encoding="utf-8") as handle:
        for text in handle:
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption is redone
            if isinstance(data, dict) and not data.get("errors") and isinstance(data.get("line"), int):
                done[data["line"]] = data.get("id")
    return done


def _drop_superseded(predictions: Path) -> None:
    """After a resume, keep one output per input line: the newest (a retried error is replaced),
    and rewrite the file in input order. Holds only (line, offset) pairs in memory."""
    latest: dict[int, int] = {}
    offset = 0
    with predictions.open("rb") as handle:
        for raw in handle:
            try:
                line = json.loads(raw).get("line")
            except (json.JSONDecodeError, AttributeError):
                line = None
            if isinstance(line, int):
                latest[line] = offset
            offset += len(raw)
    tmp = predictions.with_suffix(".jsonl.tmp")
    with predictions.open("rb") as src, tmp.open("wb") as dst:
        for line in sorted(latest):
            src.seek(latest[line])
            dst.write(src.readline())
    os.replace(tmp, predictions)
