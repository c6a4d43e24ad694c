"""`mmie-pipe report`: a run directory (or a bench directory) as one static HTML page.

Scores come from `mmie_pipe.metrics.evaluate` on the same id join `mmie-pipe eval` uses, so the
page and `eval` never disagree; the per-record view classifies items with the same matching.
"""

from __future__ import annotations

import json
from collections import Counter
from html import escape
from pathlib import Path

from ..data.jsonl import iter_jsonl_records, iter_prediction_records
from ..metrics import evaluate, join_by_id
from ..metrics.entities import Mode
from ..records import Record
from . import html
from .analysis import RecordAnalysis, analyse, infer_task

PREDICTIONS = "predictions.jsonl"
MANIFEST = "manifest.json"
BENCH_RESULTS = "results.json"


class ReportError(ValueError):
    """The path holds neither a run nor a bench, or nothing in it can be scored."""


def _predictions_path(path: Path) -> Path:
    if not path.exists():
        raise ReportError(f"{path} does not exist")
    if path.is_file():
        return path
    candidate = path / PREDICTIONS
    if not candidate.is_file():
        raise ReportError(f"{path} holds no {PREDICTIONS} (is it a run directory?)")
    return candidate


def run_section(
    run_dir: Path, *, gold: Path | None = None, task: str | None = None, mode: Mode = "offsets",
    limit: int | None = None, anchor: str = "",
) -> tuple[str, dict]:
    """The scores, the confusion table and the record views of one run, as HTML."""
    predictions_path = _predictions_path(run_dir)
    predictions = list(iter_prediction_records(predictions_path))
    gold_records = list(iter_jsonl_records(gold)) if gold else None
    joined = join_by_id(predictions, gold_records)
    if not joined.records:
        raise ReportError(
            f"nothing to score in {predictions_path}: no prediction carries gold and no --gold was given"
        )
    task = task or infer_task(joined.records)
    result = evaluate(joined, task, mode)
    by_id = {r.id: r for r in predictions}
    gold_by_id = {r.id: r for r in gold_records} if gold_records else {}
    confusion: Counter = Counter()
    views = []
    for index, joined_record in enumerate(joined.records):
        analysis = analyse(joined_record, task, mode, confusion)
        if limit is not None and index >= limit:
            continue
        record = by_id.get(joined_record.id)
        has_prediction = record is not None
        if record is None or not record.text:  # an unreadable input line: show the gold post
            fallback = gold_by_id.get(joined_record.id)
            record = fallback if fallback is not None else record
        views.append(html.record_view(index, record or Record.model_construct(id=joined_record.id, text=""),
                                      analysis, has_prediction=has_prediction))
    for index, record_id in enumerate(joined.no_gold, start=len(joined.records)):
        if limit is None or len(views) < limit:  # shown, not scored: nothing to compare with
            views.append(html.record_view(index, by_id[record_id], analyse_nothing(), has_prediction=True))
    what = "label" if task == "mre" else "type"
    body = (
        f"<h2 id=\"{anchor}scores\">Scores ({escape(task)}, {escape(mode)} matching)</h2>{html.scores_table(result)}"
        f"<h2 id=\"{anchor}confusion\">Confusion of {what}s</h2>{html.confusion_table(confusion, what)}"
        f"<h2 id=\"{anchor}records\">Records</h2>{html.records_block(views, len(joined.records) + len(joined.no_gold))}"
    )
    main_name, main = next(iter(result.metrics.items()))
    return body, {"task": task, "metric": main_name, "f1": main.scores.micro.f1, "records": len(joined.records)}


def analyse_nothing() -> RecordAnalysis:
    return RecordAnalysis()


def _manifest_rows(run_dir: Path) -> list[tuple[str, object]]:
    path = run_dir / MANIFEST if run_dir.is_dir() else None
    if path is None or not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    rows: list[tuple[str, object]] = [("pipeline", data.get("pipeline")), ("input", data.get("input")),
                                      ("seed", data.get("seed")), ("git revision", data.get("git_revision"))]
    for role, backend in (data.get("backends") or {}).items():
        identity = backend.get("identity", {})
        rows.append((f"backend {role}", f"{backend.get('kind')} {identity.get('name', '')}".strip()))
    attempts = data.get("attempts") or []
    if attempts:
        last = attempts[-1]
        rows.append(("attempts", len(attempts)))
        for key in ("model_calls", "cache_hits", "prompt_tokens", "completion_tokens", "seconds"):
            if key in last:
                rows.append((f"{key} (last attempt)", last[key]))
    return [(k, v) for k, v in rows if v is not None]


def build_report(
    path: Path, *, gold: Path | None = None, task: str | None = None, mode: Mode = "offsets", limit: int | None = None
) -> str:
    if path.is_dir() and (path / BENCH_RESULTS).is_file():
        return _bench_report(path, gold=gold, task=task, mode=mode, limit=limit)
    body, summary = run_section(path, gold=gold, task=task, mode=mode, limit=limit)
    rows = _manifest_rows(path)
    head = f"<h2>Run</h2>{html.key_value_table(rows)}" if rows else ""
    title = f"mmie-pipe report: {path.name}"
    subtitle = f"{summary['records']} records, {summary['metric']} F1 {html.pct(summary['f1'])}"
    return html.page(title, subtitle, head + body)


def _bench_report(path: Path, *, gold, task, mode, limit) -> str:
    results = json.loads((path / BENCH_RESULTS).read_text(encoding="utf-8"))
    task = task or results.get("task")
    mode = results.get("mode", mode)
    columns = [c for c in results.get("columns") or [] if c != "cell"]
    rows = results.get("cells") or []
    short = {"precision": "P", "recall": "R", "f1": "F1", "model_calls": "calls", "cache_hits": "hits",
             "cost_per_1k_posts": "cost/1k posts", "tokens_per_1k_posts": "tokens/1k posts"}
    head = "".join(f"<th>{escape(short.get(c, c))}</th>" for c in columns)

    def shown(column: str, value) -> str:
        if column in ("precision", "recall", "f1") and isinstance(value, (int, float)):
            return html.pct(value)
        return _fmt(value)

    body_rows = "".join(
        "<tr>" + "".join(f"<td>{escape(shown(c, row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows
    )
    parts = [f"<h2>Results</h2><p class=\"muted\">P/R/F1 in %; tokens and cost: what a fresh run of the cell "
             f"takes.</p><div style=\"overflow-x:auto\"><table class=\"bench\"><thead><tr>{head}</tr></thead>"
             f"<tbody>{body_rows}</tbody></table></div>"]
    for row in rows:
        run_dir = path / row["run_dir"] if row.get("run_dir") else None
        title = f"{row['cell']}: {row.get('status', '')}"
        if run_dir is None or not (run_dir / PREDICTIONS).is_file():
            parts.append(f"<div class=\"cell\"><p>{escape(title)} (no predictions)</p></div>")
            continue
        section, summary = run_section(run_dir, gold=gold, task=task, mode=mode, limit=limit,
                                       anchor=f"{row['cell']}-")
        parts.append(
            f"<details class=\"cell\" data-cell=\"{escape(row['cell'])}\"><summary>{escape(row['cell'])}: "
            f"{summary['metric']} F1 {html.pct(summary['f1'])} on {summary['records']} records</summary>{section}</details>"
        )
    title = f"mmie-pipe bench report: {results.get('name', path.name)}"
    return html.page(title, f"{len(rows)} cells, task {task}", "".join(parts))


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
