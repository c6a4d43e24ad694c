"""`mmie-pipe train tagger`: train the transformer + CRF tagger (see docs/tagger.md)."""

from __future__ import annotations

import argparse
import json
import sys

DEFAULTS_NOTE = "defaults suit all-MiniLM-L6-v2 on CPU; the papers use xlm-roberta-large on GPU"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train trainable components (the tagger)")
    sub = parser.add_subparsers(dest="train_command", required=True)
    tagger = sub.add_parser(
        "tagger",
        help="train a transformer + CRF entity tagger (PGIM / RiVEG / ITA / GEM style)",
        description=f"Train a transformer + CRF tagger; {DEFAULTS_NOTE}.",
    )
    data = tagger.add_argument_group("data (a converted JSONL file, or dataset:split such as twitter2017:train)")
    data.add_argument("--train", required=True)
    data.add_argument("--dev", help="model selection and early stopping (without: the last epoch is kept)")
    data.add_argument("--test", help="scored once with the selected model")
    data.add_argument("--knowledge", help="knowledge kind for dataset:split sources (e.g. pgim)")
    data.add_argument("--captions", help="caption kind for dataset:split sources (e.g. blip2)")
    data.add_argument("--data-root", help="data folder (default: $MMIE_DATA_ROOT, else ../shared/data)")
    data.add_argument("--limit", type=int, help="only the first N records of each split (smoke runs)")

    model = tagger.add_argument_group("model")
    model.add_argument("--encoder", default="all-MiniLM-L6-v2", help="local path, packaged name, or cached HF name")
    model.add_argument(
        "--context",
        action="append",
        choices=("knowledge", "visual_context", "caption"),
        help="record field appended after the post as untagged context (repeatable; default: "
        "knowledge with --knowledge, caption with --captions)",
    )
    model.add_argument("--no-context", action="store_true", help="tag the post alone even if knowledge is loaded")
    model.add_argument("--scheme", choices=("BIO", "BIOES"), default="BIO")
    model.add_argument("--max-length", type=int, default=128, help="subwords of post + context (context cut first)")
    model.add_argument("--dropout", type=float, default=0.1)
    model.add_argument("--gem", action="store_true", help="coarse + fine heads with a coarse-to-fine transition")
    model.add_argument("--beta", type=float, default=0.1, help="GEM: weight of the coarse-to-fine scores")
    model.add_argument(
        "--freeze-embeddings", action="store_true", help="keep the word embeddings fixed (faster on CPU)"
    )
    model.add_argument("--allow-download", action="store_true", help="let transformers download the encoder")

    loop = tagger.add_argument_group("training")
    loop.add_argument("--epochs", type=int, default=5)
    loop.add_argument("--batch-size", type=int, default=16)
    loop.add_argument("--eval-batch-size", type=int, default=64)
    loop.add_argument("--lr-encoder", type=float, default=5e-5)
    loop.add_argument("--lr-head", type=float, default=5e-3, help="linear head(s) and CRF")
    loop.add_argument("--weight-decay", type=float, default=0.01)
    loop.add_argument("--warmup-ratio", type=float, default=0.1)
    loop.add_argument("--seed", type=int, default=42)
    loop.add_argument("--patience", type=int, default=3, help="epochs without a better dev F1 before stopping")
    loop.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    loop.add_argument("--checkpoint-steps", type=int, help="also save a resumable checkpoint every N steps")
    loop.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    loop.add_argument("--threads", type=int, help="torch CPU threads")
    loop.add_argument("--no-progress", action="store_true")

    tagger.add_argument("--output", "-o", required=True, help="run directory (best/, last/, manifest.json)")
    tagger.add_argument("--resume", action="store_true", help="continue from <output>/last")
    tagger.add_argument("--overwrite", action="store_true", help="replace a previous run in <output>")
    tagger.set_defaults(func=run_tagger)


def context_fields(args: argparse.Namespace) -> list[str]:
    if args.no_context:
        return []
    if args.context:
        return list(dict.fromkeys(args.context))
    return (["knowledge"] if args.knowledge else []) + (["caption"] if args.captions else [])


def run_tagger(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..errors import MmieError
    from ..train.data import DataSource
    from ..train.trainer import TrainSettings, train_tagger

    try:
        settings = TrainSettings(
            encoder=args.encoder,
            scheme=args.scheme,
            context_fields=context_fields(args),
            max_length=args.max_length,
            dropout=args.dropout,
            gem=args.gem,
            beta=args.beta,
            freeze_embeddings=args.freeze_embeddings,
            epochs=args.epochs,
            batch_size=args.batch_size,
            eval_batch_size=args.eval_batch_size,
            lr_encoder=args.lr_encoder,
            lr_head=args.lr_head,
            weight_decay=args.weight_decay,
            warmup_ratio=args.warmup_ratio,
            seed=args.seed,
            patience=args.patience,
            max_steps=args.max_steps,
            checkpoint_steps=args.checkpoint_steps,
            device=args.device,
            threads=args.threads,
        )
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def source(spec: str | None) -> DataSource | None:
        if spec is None:
            return None
        return DataSource(spec, args.knowledge, args.captions, args.data_root, args.limit)

    try:
        manifest = train_tagger(
            settings,
            source(args.train),
            args.output,
            dev=source(args.dev),
            test=source(args.test),
            resume=args.resume,
            overwrite=args.overwrite,
            allow_download=args.allow_download,
            progress=False if args.no_progress else None,
        )
    except (MmieError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = {
        "output": args.output,
        "best_epoch": manifest["training"]["best_epoch"],
        "best_dev_f1": manifest["training"]["best_dev_f1"],
        "scores": {split: {f: s["micro"] for f, s in fields.items()} for split, fields in manifest["scores"].items()},
        "seconds": manifest["seconds"],
        "memory": manifest["memory"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m mmie_pipe.commands.train train tagger ...`: the same command without the full CLI."""
    import logging

    parser = argparse.ArgumentParser(prog="mmie-pipe")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
