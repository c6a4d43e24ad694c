"""A bench's results: one row per cell (scores from `mmie_pipe.metrics`, counters and tokens from
each cell's run manifest, cost from the price table), written as Markdown, CSV and JSON, plus
plots and the bench manifest.

Every figure comes from files on disk (predictions and run manifests), never from this process's
memory, so re-running an unchanged spec rewrites the same tables, byte for byte except `wall_s`.
Tokens are what the cell's requests take, whether this bench paid for them or the cache served
them (the cache keeps each answer's token usage), so a cell's cost is what a fresh run pays. For
stages whose requests can be rebuilt from the input, the usage of every request is read back from
the cache when the cell finishes (exact); otherwise it is summed over the run's attempts (a call
that finished just before an interruption then counts twice).
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from ..data.jsonl import iter_prediction_records
from ..manifest import MANIFEST, git_revision, package_versions
from ..metrics import evaluate, join_by_id
from ..pricing import PriceTable, bill
from .execute import CELL_STATE, CellOutcome, file_sha256, is_complete
from .spec import BenchSpec

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
PER_TYPE_CSV = "results_per_type.csv"
BENCH_MANIFEST = "bench_manifest.json"
TIMING_COLUMNS = ("wall_s",)


def _attempts(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / MANIFEST
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("attempts") or []


def _sum_tokens(attempts: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for attempt in attempts:
        for model, counts in (attempt.get("tokens_by_model") or {}).items():
            book = total.setdefault(model, {})
            for k, v in counts.items():
                book[k] = book.get(k, 0) + int(v)
    return total


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def cell_row(outcome: CellOutcome, spec: BenchSpec, prices: PriceTable, out_dir: Path) -> tuple[dict, list[dict]]:
    cell, run_dir = outcome.cell, outcome.run_dir
    row: dict[str, Any] = {**cell.describe()}
    predictions = run_dir / "predictions.jsonl"
    if is_complete(run_dir):
        row["status"] = "done"
    elif outcome.status.startswith("stopped"):
        row["status"] = "stopped: budget"
    elif outcome.status.startswith("failed"):
        row["status"] = "failed"
    else:
        row["status"] = "partial" if predictions.is_file() else "not run"
    per_type: list[dict] = []
    if predictions.is_file():
        joined = join_by_id(iter_prediction_records(predictions))
        result = evaluate(joined, spec.task, spec.mode)
        main_name, main = next(iter(result.metrics.items()))
        micro = main.scores.micro
        row.update(records=result.counts["records"], errors=result.counts["error_records"], metric=main_name,
                   precision=_r(micro.precision), recall=_r(micro.recall), f1=_r(micro.f1),
                   tp=micro.tp, pred=micro.n_pred, gold=micro.n_gold)
        per_type = [
            {"cell": cell.id, "type": kind, "precision": _r(prf.precision), "recall": _r(prf.recall),
             "f1": _r(prf.f1), "tp": prf.tp, "pred": prf.n_pred, "gold": prf.n_gold}
            for kind, prf in sorted(main.scores.per_type.items())
        ]
    attempts = _attempts(run_dir)
    state = run_dir / CELL_STATE
    measured = json.loads(state.read_text(encoding="utf-8")).get("tokens_by_model") if state.is_file() else None
    if measured is not None:  # every request's usage, read back from the cache when the cell finished
        fresh = bill(measured, prices)
    else:  # stages that plan their calls while running: the attempts' sums
        fresh = bill(_sum_tokens(attempts), prices, include_cached=True)
    records = row.get("records") or 0
    row.update(
        model_calls=sum(a.get("model_calls", 0) for a in attempts),
        cache_hits=sum(a.get("cache_hits", 0) for a in attempts),
        tokens_in=fresh.prompt_tokens,
        tokens_out=fresh.completion_tokens,
        cost=_r(fresh.cost, 6),
        cost_per_1k_posts=_r(fresh.cost * 1000 / records, 6) if fresh.cost is not None and records else None,
        tokens_per_1k_posts=round((fresh.prompt_tokens + fresh.completion_tokens) * 1000 / records) if records else None,
        wall_s=round(sum(a.get("seconds", 0.0) for a in attempts), 1),
        run_dir=str(run_dir.relative_to(out_dir)),
    )
    return row, per_type


def columns_for(spec: BenchSpec, rows: list[dict]) -> list[str]:
    axes = [a for a in spec.grid if a not in ("profile", "model", "set")] + [a for a in ("profile", "model", "set") if a in spec.grid]
    return ["cell", "pipeline", "data", *axes, "status", "records", "errors", "precision", "recall", "f1",
            "model_calls", "cache_hits", "tokens_in", "tokens_out", "cost", "cost_per_1k_posts",
            "tokens_per_1k_posts", "wall_s"]


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def markdown(spec: BenchSpec, columns: list[str], rows: list[dict], per_type: list[dict], currency: str) -> str:
    shown = [c for c in columns if c not in ("cell",)]
    header = {"precision": "P", "recall": "R", "f1": "F1", "model_calls": "calls", "cache_hits": "hits",
              "cost": f"cost ({currency})", "cost_per_1k_posts": f"{currency}/1k posts",
              "tokens_per_1k_posts": "tokens/1k posts"}
    lines = [f"# Bench {spec.name}", "", f"Task {spec.task} ({spec.mode} matching), seed {spec.seed}. "
             "P/R/F1 in %, micro-averaged; tokens and cost are what a fresh run of the cell takes.", ""]
    lines.append("| " + " | ".join(header.get(c, c) for c in shown) + " |")
    lines.append("|" + "|".join("---" for _ in shown) + "|")
    for row in rows:
        cells = []
        for c in shown:
            v = row.get(c)
            cells.append(f"{100 * v:.2f}" if c in ("precision", "recall", "f1") and v is not None else _cell_text(v))
        lines.append("| " + " | ".join(cells) + " |")
    types = sorted({p["type"] for p in per_type})
    if types:
        lines += ["", "F1 per type (%):", "", "| cell | " + " | ".join(types) + " |", "|---|" + "---|" * len(types)]
        by_cell: dict[str, dict[str, float]] = {}
        for p in per_type:
            by_cell.setdefault(p["cell"], {})[p["type"]] = p["f1"]
        for row in rows:
            if row["cell"] in by_cell:
                values = [f"{100 * by_cell[row['cell']][t]:.2f}" if t in by_cell[row["cell"]] else "" for t in types]
                lines.append(f"| {row['cell']} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def csv_text(columns: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell_text(row.get(c)) for c in columns])
    return buffer.getvalue()


def write_results(spec: BenchSpec, outcomes: list[CellOutcome], prices: PriceTable, out_dir: Path) -> dict[str, Any]:
    rows, per_type = [], []
    for outcome in outcomes:
        row, types = cell_row(outcome, spec, prices, out_dir)
        rows.append(row)
        per_type += types
    columns = columns_for(spec, rows)
    payload = {"name": spec.name, "task": spec.task, "mode": spec.mode, "seed": spec.seed,
               "currency": prices.currency, "columns": columns, "cells": rows, "per_type": per_type}
    (out_dir / RESULTS_JSON).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out_dir / RESULTS_CSV).write_text(csv_text(columns, rows), encoding="utf-8")
    (out_dir / PER_TYPE_CSV).write_text(
        csv_text(["cell", "type", "precision", "recall", "f1", "tp", "pred", "gold"], per_type), encoding="utf-8")
    (out_dir / RESULTS_MD).write_text(markdown(spec, columns, rows, per_type, prices.currency), encoding="utf-8")
    return payload


def write_manifest(spec: BenchSpec, spec_path: Path, outcomes: list[CellOutcome], inputs: dict[str, Path],
                   out_dir: Path, *, budget: str | None) -> None:
    """Versions, seeds, model identities (file hashes), git revision, inputs and cells."""
    models: dict[str, Any] = {}
    cells = []
    for outcome in outcomes:
        run_manifest = outcome.run_dir / MANIFEST
        backends = {}
        if run_manifest.is_file():
            backends = json.loads(run_manifest.read_text(encoding="utf-8")).get("backends") or {}
        for described in backends.values():
            identity = described.get("identity") or {}
            models[json.dumps(identity, sort_keys=True)] = {"kind": described.get("kind"), **identity}
        cells.append({"cell": outcome.cell.id, "run_dir": str(outcome.run_dir.relative_to(out_dir)),
                      "config_fingerprint": outcome.cell.config.fingerprint(), "overrides": outcome.cell.overrides,
                      "status": outcome.status})
    data = {
        "bench": spec.name,
        "spec_file": str(spec_path),
        "spec_sha256": file_sha256(spec_path),
        "spec": spec.model_dump(mode="json"),
        "seed": spec.seed,
        "budget": budget,
        "inputs": {name: {"file": str(p.relative_to(out_dir)), "sha256": file_sha256(p)} for name, p in inputs.items()},
        "models": sorted(models.values(), key=lambda m: json.dumps(m, sort_keys=True)),
        "cells": cells,
        "packages": package_versions(),
        "git_revision": git_revision(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out_dir / BENCH_MANIFEST).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
