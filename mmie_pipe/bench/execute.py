"""Running a bench: data prepared once, backends started once and shared by the cells that use
them, each cell through the normal `Runner` (cached, resumable, concurrent) into its own run
directory, with an optional budget checked before each cell."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import registry
from ..adapters.base import Backend
from ..cache import GenerationCache, canonical_json
from ..data import load_split
from ..data.jsonl import iter_jsonl_records, write_jsonl
from ..errors import ConfigError, MmieError
from ..pricing import PriceTable, bill
from ..runner import Runner
from .plan import CellPlan, plan_cell
from .spec import BenchSpec, Cell, DataSpec

log = logging.getLogger(__name__)
CELL_STATE = "cell.json"


@dataclass(frozen=True)
class Budget:
    kind: str  # "tokens" | "money"
    limit: float

    def describe(self, currency: str = "USD") -> str:
        return f"{int(self.limit)} tokens" if self.kind == "tokens" else f"{self.limit:g} {currency}"


_BUDGET = re.compile(
    r"^\s*(?:(?P<cur>\$|usd\s*)?(?P<num>\d+(?:\.\d+)?)\s*(?P<k>[km])?\s*(?P<unit>tokens?|usd|\$)?\s*)$", re.I
)


def parse_budget(text: str) -> Budget:
    """`200000 tokens`, `50k tokens`, `$2.50`, `2.5 USD`."""
    m = _BUDGET.match(text or "")
    if not m or (m["cur"] and m["unit"] and m["unit"].lower().startswith("token")):
        raise ConfigError(f"--budget {text!r}: expected e.g. '50000 tokens', '50k tokens', '$2.50' or '2.5 USD'")
    value = float(m["num"]) * {"k": 1e3, "m": 1e6}.get((m["k"] or "").lower(), 1)
    unit = (m["unit"] or "").lower()
    if m["cur"] or unit in ("usd", "$"):
        return Budget("money", value)
    if unit.startswith("token"):
        return Budget("tokens", value)
    raise ConfigError(f"--budget {text!r}: say 'tokens' or give a currency ('$2.50', '2.5 USD')")


# -- data ---------------------------------------------------------------------------------------

def prepare_data(spec: BenchSpec, base: Path, out_dir: Path) -> dict[str, Path]:
    """Each data set of the spec as one JSONL file (a fixed-seed sample when asked), rewritten only
    when its content changes, so unchanged specs resume onto the same inputs."""
    folder = out_dir / "data"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in spec.data.items():
        records = list(_load(data, base))
        if data.sample is not None and data.sample < len(records):
            keep = sorted(random.Random(spec.seed).sample(range(len(records)), data.sample))
            records = [records[i] for i in keep]
        path = folder / f"{name}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            write_jsonl(records, out)
        if path.is_file() and path.read_bytes() == tmp.read_bytes():
            tmp.unlink()
        else:
            os.replace(tmp, path)
        paths[name] = path
    return paths


def _load(data: DataSpec, base: Path):
    if data.file is not None:
        path = Path(data.file) if Path(data.file).is_absolute() else base / data.file
        if not path.is_file():
            raise ConfigError(f"data file {path} does not exist")
        return iter_jsonl_records(path)
    try:
        return load_split(data.dataset, data.split, data_root=data.data_root, captions=data.captions,
                          knowledge=data.knowledge)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"data {data.dataset}/{data.split}: {exc}") from exc


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- cells --------------------------------------------------------------------------------------

@dataclass
class CellOutcome:
    cell: Cell
    run_dir: Path
    status: str  # done | resumed | stopped: budget | failed: ... | planned
    plan: CellPlan | None = None
    seconds: float = 0.0
    spent: dict[str, Any] = field(default_factory=dict)  # this invocation's tokens_by_model


def cell_dir(out_dir: Path, cell: Cell, data_sha: str) -> Path:
    """A cell's run directory: its name plus a hash of its config and input, so an edited spec
    gets a fresh directory instead of a resume guard error."""
    digest = hashlib.sha256(f"{cell.config.fingerprint()}:{data_sha}".encode()).hexdigest()[:8]
    return out_dir / "cells" / f"{cell.id}-{digest}"


def is_complete(run_dir: Path) -> bool:
    state = run_dir / CELL_STATE
    return state.is_file() and (run_dir / "predictions.jsonl").is_file() and json.loads(state.read_text(encoding="utf-8")).get("complete") is True


class SharedBackends:
    """One backend per distinct backend config, started on first use and closed at the end."""

    def __init__(self) -> None:
        self.built: dict[str, Backend] = {}
        self.started: set[str] = set()

    @staticmethod
    def key(spec: dict[str, Any]) -> str:
        return canonical_json(spec)

    def for_cell(self, cell: Cell) -> dict[str, Backend]:
        out = {}
        for role, spec in cell.config.backends.items():
            key = self.key(spec)
            if key not in self.built:
                self.built[key] = registry.backends.build(spec["kind"], spec)
            out[role] = self.built[key]
        return out

    async def start_for(self, cell: Cell) -> None:
        for spec in cell.config.backends.values():
            key = self.key(spec)
            if key not in self.started:
                self.started.add(key)  # before awaiting: a failed start is still closed
                await self.built[key].start()

    async def close(self) -> None:
        for key in list(self.started):
            try:
                await self.built[key].close()
            except Exception:  # noqa: BLE001 - closing the others matters more
                log.warning("closing a backend failed", exc_info=True)
        self.started.clear()


def _runner(cell: Cell, shared: SharedBackends, caches: dict[tuple[str, bool], GenerationCache]) -> Runner:
    rt = cell.config.runtime
    key = (str(rt.cache_path or ""), rt.cache)
    if key not in caches:
        caches[key] = GenerationCache(rt.cache_path, enabled=rt.cache)
    return Runner(cell.config, cache=caches[key], backends=shared.for_cell(cell))


async def plan_cells(cells: list[Cell], inputs: dict[str, Path], out_dir: Path) -> list[CellOutcome]:
    shared = SharedBackends()
    caches: dict[tuple[str, bool], GenerationCache] = {}
    outcomes = []
    shas = {name: file_sha256(p) for name, p in inputs.items()}
    seen: set[str] = set()  # a request an earlier cell makes is a cache hit for the later ones
    for cell in cells:
        runner = _runner(cell, shared, caches)
        run_dir = cell_dir(out_dir, cell, shas[cell.data])
        outcomes.append(CellOutcome(cell, run_dir, "planned", plan_cell(runner, inputs[cell.data], seen=seen)))
    return outcomes


async def run_cells(
    cells: list[Cell],
    inputs: dict[str, Path],
    out_dir: Path,
    *,
    prices: PriceTable,
    budget: Budget | None = None,
    progress: bool | None = None,
    on_cell=None,
) -> list[CellOutcome]:
    shared = SharedBackends()
    caches: dict[tuple[str, bool], GenerationCache] = {}
    shas = {name: file_sha256(p) for name, p in inputs.items()}
    outcomes: list[CellOutcome] = []
    spent_tokens = 0
    spent_money = 0.0
    stopped = False
    chars_per_token: dict[str, float] = {}  # observed on the cells run so far, per model
    try:
        for cell in cells:
            run_dir = cell_dir(out_dir, cell, shas[cell.data])
            if stopped:
                outcomes.append(CellOutcome(cell, run_dir, "stopped: budget"))
                continue
            if is_complete(run_dir):
                outcomes.append(CellOutcome(cell, run_dir, "done"))
                continue
            runner = _runner(cell, shared, caches)
            plan = plan_cell(runner, inputs[cell.data], chars_per_token)
            if budget:
                if budget.kind == "tokens":
                    would = spent_tokens + plan.tokens
                else:
                    cell_cost = plan.cost(prices)
                    would = spent_money + (cell_cost or 0.0)
                if would > budget.limit:
                    stopped = True
                    outcomes.append(CellOutcome(cell, run_dir, "stopped: budget", plan))
                    continue
            resumed = (run_dir / "predictions.jsonl").is_file()
            started = time.perf_counter()
            try:
                if not plan.exact or plan.calls:  # a cell the cache answers whole starts no server
                    await shared.start_for(cell)
                summary = await runner.run(inputs[cell.data], run_dir, progress=progress, source=cell.source)
            except MmieError as exc:  # e.g. a server that did not start: the other cells still run
                outcomes.append(CellOutcome(cell, run_dir, f"failed: {exc}", plan, time.perf_counter() - started))
                continue
            state = {"cell": cell.id, "complete": True, "overrides": cell.overrides}
            measured = plan_cell(runner, inputs[cell.data])
            if measured.exact and measured.calls == 0:
                # Every request's usage, read back from the cache: exact even after an interruption
                # (the manifests' per-attempt sums count a call finished before it twice).
                state["tokens_by_model"] = measured.cached_usage
            (run_dir / CELL_STATE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            spent = summary.calls.as_dict()["tokens_by_model"]
            if plan.calls:
                for model, chars in plan.chars_by_model.items():
                    prompt_tokens = spent.get(model, {}).get("prompt", 0)
                    if chars and prompt_tokens:
                        chars_per_token[model] = chars / prompt_tokens
            this = bill(spent, prices)
            spent_tokens += this.prompt_tokens + this.completion_tokens
            spent_money += this.cost or 0.0
            outcome = CellOutcome(cell, run_dir, "resumed" if resumed else "done", plan,
                                  time.perf_counter() - started, spent)
            outcomes.append(outcome)
            if on_cell is not None:
                on_cell(outcome)
    finally:
        await shared.close()
    return outcomes


def run_async(coro):
    return asyncio.run(coro)
