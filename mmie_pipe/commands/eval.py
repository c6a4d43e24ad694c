"""`mmie-pipe eval`: score predictions (JSONL `Record`s) against gold, joined by record id."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..data import DataFormatError
from ..data.jsonl import iter_jsonl_records, iter_prediction_records
from ..metrics import MODES, TASKS, evaluate, join_by_id
from ..metrics.tasks import TaskResult
from ..records import Entity, Relation


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="score predictions against gold (P/R/F1, per type)")
    parser.add_argument("--pred", required=True, help="predictions JSONL (e.g. run/predictions.jsonl)")
    parser.add_argument("--gold", help="gold JSONL (from `data convert`); default: the `gold` inside each prediction")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--mode", choices=MODES, default="offsets", help="match spans by offsets (default) or strings")
    parser.add_argument("--show-errors", action="store_true", help="list unmatched predictions and missed gold")
    parser.add_argument("--max-errors", type=int, default=200, help="at most this many of each list (default 200)")
    parser.add_argument("--out", help="metrics JSON path (default: metrics.json next to --pred)")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    try:
        gold = list(iter_jsonl_records(args.gold)) if args.gold else None
        joined = join_by_id(iter_prediction_records(args.pred), gold)
    except (DataFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not joined.records:
        print("error: nothing to score: no prediction carries gold and no --gold was given", file=sys.stderr)
        return 2
    if gold is not None and joined.unknown_predictions and len(joined.missing_predictions) == len(joined.records):
        print(f"error: no prediction id matches a gold id in {args.gold}: wrong --gold file?", file=sys.stderr)
        return 2
    result = evaluate(joined, args.task, args.mode, keep_errors=args.show_errors)
    print(format_report(result))
    if args.show_errors:
        print(format_errors(result, args.max_errors))
    out = Path(args.out) if args.out else Path(args.pred).with_name("metrics.json")
    payload = result.to_dict()
    payload["inputs"] = {"pred": args.pred, "gold": args.gold or "inline"}
    payload["ids"] = {
        "missing_predictions": joined.missing_predictions[:1000],
        "unknown_predictions": joined.unknown_predictions[:1000],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\nmetrics written to {out}")
    return 0


def format_report(result: TaskResult) -> str:
    c = result.counts
    lines = [
        f"task {result.task}, mode {result.mode}: {c['records']} records scored, "
        f"{c['error_records']} with errors (scored as empty predictions), "
        f"{c['missing_predictions']} without a prediction (empty), "
        f"{c['unknown_predictions']} predictions not in gold (ignored)"
    ]
    if "gold_entities" in c:
        extra = f", {c['gold_groundable']} groundable" if "gold_groundable" in c else ""
        lines.append(f"gold entities: {c['gold_entities']}{extra}; predicted: {c['pred_entities']}")
    if "gold_relations" in c:
        lines.append(f"gold relation instances: {c['gold_relations']} (None included)")
    main_name, main = next(iter(result.metrics.items()))
    width = max([14, *(len(k) + 3 for k in main.scores.per_type)])
    lines.append("")
    lines.append(f"{'metric':<{width}} {'P':>7} {'R':>7} {'F1':>7} {'tp':>7} {'pred':>7} {'gold':>7}")
    for name, metric in result.metrics.items():
        lines.append(_row(name, metric.scores.micro, width))
    if main.scores.per_type:
        lines.append("")
        lines.append(f"per type ({main_name}):")
        for kind, prf in sorted(main.scores.per_type.items()):
            lines.append(_row(f"  {kind}", prf, width))
    if "accuracy" in main.scores.extra:
        lines.append(f"\naccuracy (None included): {100 * main.scores.extra['accuracy']:.2f}")
    return "\n".join(lines)


def _row(name: str, prf, width: int) -> str:
    return (
        f"{name:<{width}} {100 * prf.precision:7.2f} {100 * prf.recall:7.2f} {100 * prf.f1:7.2f} "
        f"{prf.tp:>7} {prf.n_pred:>7} {prf.n_gold:>7}"
    )


def format_errors(result: TaskResult, limit: int) -> str:
    main_name, main = next(iter(result.metrics.items()))
    lines = [f"\nerrors for {main_name}:"]
    for title, items in (("unmatched predictions", main.unmatched_pred), ("missed gold", main.missed_gold)):
        lines.append(f"{title}: {len(items)}" + (f" (first {limit})" if len(items) > limit else ""))
        lines += [f"  {record_id}\t{_describe(item)}" for record_id, item in items[:limit]]
    return "\n".join(lines)


def _describe(item: Entity | Relation) -> str:
    if isinstance(item, Relation):
        return f"{item.head.text!r} -> {item.tail.text!r}: {item.label}"
    parts = [f"{item.text!r} [{item.start}:{item.end}]", str(item.type)]
    if item.fine_type:
        parts.append(item.fine_type)
    if item.boxes and item.groundable is not False:
        b = item.boxes[0]
        parts.append(f"box ({b.xmin:g},{b.ymin:g},{b.xmax:g},{b.ymax:g})" + (f" +{len(item.boxes) - 1}" if len(item.boxes) > 1 else ""))
    elif item.groundable is False or not item.boxes:
        parts.append("no box")
    return " ".join(parts)
