"""Runs a validated pipeline over a JSONL file: bounded in-flight records, outputs written in
input order as records complete, per-record errors, an error budget, resume and a run manifest.

Reading and writing records is `record_io`'s job, keeping records in flight `scheduling`'s, the
output folder's guards `run_folder`'s; this module builds the stages and drives one run.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from . import registry
from .adapters.base import Backend
from .cache import GenerationCache
from .calls import CallStats, ModelClient
from .errors import ConfigError, MmieError, ModelCallError, StageInputError
from .manifest import MANIFEST, RunManifest
from .pipeline import PipelineConfig, role_bindings
from .progress import Progress
from .record_io import (
    INPUT_PROVENANCE, InputLine, cut_partial_tail, error_output, finished_records, output_line,
    read_input, record_output, rewrite_in_order,
)
from .records import Record, StageError
from .redact import redact
from .run_folder import FolderLock, check_input_outside, check_writable
from .scheduling import OrderedWindow
from .stages.base import Stage, StageContext
from .summary import RunSummary

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"


class StrictModeError(MmieError):
    """Raised under --strict at the first record error (after that record is written)."""


class ErrorBudget:
    """Stops a run when the backend fails for `limit` records in a row (a dead server, a bad key):
    spending every remaining record's retries would only add identical errors. Counted in
    completion order; a record the model answered resets it, input errors leave it alone."""

    def __init__(self, limit: int):
        self.limit = limit
        self.consecutive = 0
        self.last_reason = ""

    def observe(self, record: Record) -> None:
        model_errors = [e for e in record.errors if e.kind == "model"]
        if model_errors:
            self.consecutive += 1
            self.last_reason = model_errors[-1].reason
        else:
            self.consecutive = 0

    @property
    def exhausted(self) -> bool:
        return self.limit > 0 and self.consecutive >= self.limit

    def message(self) -> str:
        return (f"stopped after {self.consecutive} records in a row failed in the model backend "
                f"(last error: {self.last_reason}); finished records are kept, run the same command to resume")


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
        if limit is not None and limit < 0:
            raise ConfigError(f"--limit must be zero or more, got {limit}")
        check_input_outside(input_path, output_dir)
        check_writable(output_dir, [PREDICTIONS, MANIFEST])
        with FolderLock(output_dir):
            return await self._run_locked(input_path, output_dir, limit=limit, strict=strict, progress=progress,
                                          source=source, overwrite=overwrite)

    async def _run_locked(
        self, input_path: Path, output_dir: Path, *, limit: int | None, strict: bool, progress: bool | None,
        source: str, overwrite: bool,
    ) -> RunSummary:
        summary = RunSummary(calls=self.stats)
        self.context.run_dir = output_dir
        self.context.input_dir = input_path.resolve().parent
        manifest = await asyncio.to_thread(
            RunManifest.open, output_dir, self.config, source=source, input_path=input_path, overwrite=overwrite
        )
        predictions = output_dir / PREDICTIONS
        if overwrite and predictions.exists():
            predictions.unlink()
        done: dict[int, str] = {}
        current_lines: dict[int, str] | None = None
        if predictions.exists():
            cut_partial_tail(predictions)
            done = finished_records(predictions)
            if manifest.input_changed:
                current_lines = _line_hashes(input_path)
                self.context.note_once("the input file changed since the previous attempt: "
                                       "records whose input line changed are redone")
        resumed = predictions.exists() and predictions.stat().st_size > 0
        started = time.perf_counter()
        bar = Progress(progress, summary, limit)
        budget = ErrorBudget(self.config.runtime.max_consecutive_failures)
        self.out_of_order = False

        def pending():
            for seen, item in enumerate(read_input(input_path)):
                if limit is not None and seen >= limit:
                    return
                if done.get(item.line) == item.input_tag:
                    summary.skipped_done += 1
                    continue
                yield item

        work = pending()
        try:
            first = next(work, None)
            if first is None:  # a finished run resumed, or an empty input: no backend needs to start
                self.build_stages()
            else:
                await self.start()  # inside the try: a backend that started is closed if another fails
            manifest.data["executor"] = self.executor_info()
            manifest.record_start(self.stages, self.all_backends(), self.context)
            with predictions.open("a", encoding="utf-8") as out:

                def emit(pair: tuple[InputLine, Record | dict[str, Any]]) -> None:
                    item, result = pair
                    data = result if isinstance(result, dict) else record_output(result, item)
                    out.write(output_line(data))
                    summary.count(data)
                    bar.update()
                    if strict and data.get("errors"):
                        out.flush()
                        raise StrictModeError(f"line {data.get('line')}: {data['errors'][0]['reason']}")

                finished = first is None or await self.process_stream(
                    itertools.chain([first], work), emit, flush=out.flush, budget=budget
                )
                if not finished:
                    summary.stopped = budget.message()
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - started
            try:
                await self.close()
                manifest.data["executor"] = self.executor_info()
                manifest.record_end(summary, self.context)
            finally:
                # Also after --strict, an interrupt or the error budget: the file is left in order.
                if resumed or self.out_of_order:
                    self._put_in_order(predictions, current_lines)
        return summary

    async def process_stream(
        self,
        items: Iterator[InputLine],
        emit: Callable[[tuple[InputLine, Record | dict[str, Any]]], None],
        *,
        flush: Callable[[], None],
        budget: ErrorBudget,
    ) -> bool:
        """Process the pending input lines, handing `(line, result)` to `emit` in input order.
        Returns False when the error budget stopped the run. In this process, many records in
        flight; `distributed.RayExecutor` overrides this to run them on a Ray cluster."""
        window: OrderedWindow[InputLine, Any] = OrderedWindow(self.config.runtime.batch_size)

        async def process(item: InputLine) -> tuple[InputLine, Record]:
            record = await self.process(item.record)
            budget.observe(record)
            return item, record

        def start(item: InputLine):
            if item.record is None:
                return item, error_output(item)
            return process(item)

        try:
            return await window.run(items, start, emit, flush=flush, should_stop=lambda: budget.exhausted)
        finally:
            self.out_of_order = window.out_of_order

    def executor_info(self) -> dict[str, Any]:
        return {"kind": "local"}

    def _put_in_order(self, predictions: Path, current_lines: dict[int, str] | None) -> None:
        keep = None
        if current_lines is not None:
            keep = lambda data: _still_current(data, current_lines)  # noqa: E731
        dropped = rewrite_in_order(predictions, keep)
        if dropped:
            self.context.note_once(f"{dropped} unreadable or outdated lines were dropped from {predictions}")


def _line_hashes(path: Path) -> dict[int, str]:
    """line -> input tag for every non-blank line (only computed when the input file changed)."""
    out = {}
    for item in read_input(path):
        out[item.line] = item.input_tag
    return out


def _still_current(data: dict[str, Any], current: dict[int, str]) -> bool:
    tag = current.get(data["line"])
    if tag is None:
        return False  # the input no longer has this line
    provenance = data.get("provenance")
    written = provenance.get(INPUT_PROVENANCE) if isinstance(provenance, dict) else None
    return written is None or written == tag


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return redact(text if isinstance(exc, MmieError) else f"{type(exc).__name__}: {text}")


def _kind(exc: BaseException) -> str:
    if isinstance(exc, ModelCallError):
        return "model"
    if isinstance(exc, StageInputError) and "image" in str(exc).lower():
        return "image"
    return "stage"
