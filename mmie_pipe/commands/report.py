"""`mmie-pipe report RUN_DIR`: one static HTML page (no server, nothing fetched) for a run or a bench."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data import DataFormatError
from ..metrics import MODES, TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="an HTML page of a run or bench: scores, confusion, every record")
    p.add_argument("run_dir", type=Path, help="run directory (predictions.jsonl), a predictions file, or a bench directory")
    p.add_argument("--gold", type=Path, help="gold JSONL (from `data convert`); default: the `gold` inside each prediction")
    p.add_argument("--task", choices=TASKS, help="default: from the gold (relations: mre, boxes: gmner, fine types: fmnerg)")
    p.add_argument("--mode", choices=MODES, default="offsets")
    p.add_argument("--limit", type=int, help="show only the first N records (scores still cover all)")
    p.add_argument("-o", "--output", type=Path, help="HTML file (default: RUN_DIR/report.html)")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ..report import ReportError, build_report

    try:
        text = build_report(args.run_dir, gold=args.gold, task=args.task, mode=args.mode, limit=args.limit)
    except (ReportError, DataFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.output or (args.run_dir / "report.html" if args.run_dir.is_dir() else args.run_dir.with_suffix(".html"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"report written to {out} ({len(text.encode()) / 1024:.0f} KiB)")
    return 0
