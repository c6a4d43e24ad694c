"""`mmie-pipe data ls` and `mmie-pipe data convert`: the benchmark files as toolkit input JSONL."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import zipfile
from pathlib import Path

from ..data import (
    CAPTION_KINDS,
    DATASETS,
    KNOWLEDGE_KINDS,
    DataFormatError,
    DataRootNotFound,
    load_split,
    resolve_data_root,
)
from ..data.jsonl import write_jsonl
from ..metrics.bio import BIO_RULES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list and convert the benchmark datasets")
    sub = parser.add_subparsers(dest="data_command", required=True)

    ls = sub.add_parser("ls", help="show datasets, splits, caption and knowledge files under the data root")
    ls.add_argument("--data-root", help="data folder (default: $MMIE_DATA_ROOT, else ../shared/data)")
    ls.add_argument("--no-counts", action="store_true", help="skip counting tweets and entities")
    ls.set_defaults(func=run_ls)

    convert = sub.add_parser("convert", help="write a split as toolkit input JSONL (gold inside)")
    convert.add_argument("dataset", choices=sorted(DATASETS))
    convert.add_argument("--split", required=True, help="train / dev|valid|val / test")
    convert.add_argument("--captions", choices=CAPTION_KINDS)
    convert.add_argument("--knowledge", choices=KNOWLEDGE_KINDS)
    convert.add_argument("--output", "-o", help="output file (default: stdout)")
    convert.add_argument("--limit", type=int, help="only the first N records")
    convert.add_argument("--path", help="input file (overrides the split file)")
    convert.add_argument("--xml-dir", help="VOC xml folder for boxes (gmner and fmnerg default: <root>/gmner/xml)")
    convert.add_argument(
        "--bio-rule",
        choices=BIO_RULES,
        default="strict",
        help="strict: only B- opens an entity (seqeval strict IOB2); conlleval: a stray I- opens one too",
    )
    convert.add_argument("--data-root", help="data folder (default: $MMIE_DATA_ROOT, else ../shared/data)")
    convert.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        records = load_split(
            args.dataset,
            args.split,
            data_root=args.data_root,
            captions=args.captions,
            knowledge=args.knowledge,
            rule=args.bio_rule,
            path=args.path,
            xml_dir=args.xml_dir,
            limit=args.limit,
        )
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            # Write to a temporary name so an interrupted run never leaves a truncated file behind.
            partial = Path(f"{args.output}.partial")
            with open(partial, "w", encoding="utf-8") as out:
                n = write_jsonl(records, out)
            os.replace(partial, args.output)
        else:
            n = write_jsonl(records, sys.stdout)
    except (DataFormatError, DataRootNotFound, ValueError) as exc:
        with contextlib.suppress(UnboundLocalError, FileNotFoundError):
            partial.unlink()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = args.output or "stdout"
    print(f"wrote {n} records to {where} in {time.perf_counter() - started:.2f}s", file=sys.stderr)
    return 0


def run_ls(args: argparse.Namespace) -> int:
    try:
        root = resolve_data_root(args.data_root)
    except DataRootNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"data root: {root.path}  (chosen by {root.how})")
    print()
    print(f"{'dataset':<12} {'split':<6} {'file':<24} {'records':>8} {'gold':>9}  note")
    for name, spec in DATASETS.items():
        for split, rel in spec.splits.items():
            path = root.path / rel
            if not path.exists():
                print(f"{name:<12} {split:<6} {rel:<24} {'missing':>8}")
                continue
            records = entities = "" if args.no_counts else None
            note = ""
            if not args.no_counts:
                records, entities, note = _count(name, split, root, spec.expected_counts.get(split))
            print(f"{name:<12} {split:<6} {rel:<24} {records:>8} {entities:>9}  {note}")
    print()
    print("captions / knowledge:")
    for rel in sorted({f for spec in DATASETS.values() for files in spec.captions.values() for f in files}):
        print(f"  {rel:<40} {_caption_count(root.path / rel)}")
    for rel in sorted({z for spec in DATASETS.values() for zips, _ in spec.knowledge.values() for z in zips}):
        print(f"  {rel:<40} {_zip_members(root.path / rel)}")
    for year in ("2015", "2017"):
        rel = f"knowledge/pgim_examples/{year}"
        present = all((root.path / rel / f).exists() for f in ("pool_answers.txt", "pool_labels.txt"))
        print(f"  {rel + '/pool_{answers,labels}.txt':<40} {'present' if present else 'missing'}")
    print()
    for name, spec in DATASETS.items():
        kinds = [f"captions: {', '.join(spec.captions) or '-'}", f"knowledge: {', '.join(spec.knowledge) or '-'}"]
        print(f"  {name:<12} {'; '.join(kinds)}")
    return 0


def _count(dataset: str, split: str, root, expected: int | None) -> tuple[str, str, str]:
    try:
        n = entities = 0
        for record in load_split(dataset, split, data_root=root):
            n += 1
            entities += len(record.gold.relations if dataset == "mnre" else record.gold.entities) if record.gold else 0
        note = "" if expected in (None, n) else f"expected {expected}!"
        if dataset == "mnre":
            note = (note + " (gold = relation instances)").strip()
        if dataset == "twitter2015":
            loose = sum(len(r.gold.entities) for r in load_split(dataset, split, data_root=root, rule="conlleval"))
            note = (note + f" strict BIO; {loose} under conlleval (stray I- opens)").strip()
        return str(n), str(entities), note
    except DataFormatError as exc:
        return "error", "", str(exc)


def _caption_count(path: Path) -> str:
    if not path.exists():
        return "missing"
    with open(path, encoding="utf-8") as handle:
        prefix = "imgid:" if "mplug_owl" in path.name else None
        n = sum(1 for line in handle if (line.startswith(prefix) if prefix else line.strip()))
    return f"{n} captions"


def _zip_members(path: Path) -> str:
    if not path.exists():
        return "missing"
    with zipfile.ZipFile(path) as zf:
        return "members: " + ", ".join(sorted(n for n in zf.namelist() if n.endswith(".txt")))
