"""`mmie-pipe finetune reranker`: LoRA-tune a type reranker for the `rerank` stage (docs/gem.md)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("finetune", help="fine-tune model components (LoRA rerankers)")
    sub = parser.add_subparsers(dest="finetune_command", required=True)
    p = sub.add_parser(
        "reranker",
        help="LoRA-tune a type reranker (GEM) on multiple-choice questions built from a data set",
        description="Builds one multiple-choice question per gold entity (the `rerank` stage's template), "
        "trains a LoRA adapter with peft, and measures choice accuracy before and after.",
    )
    data = p.add_argument_group("data (a converted JSONL file, or dataset:split such as fmnerg:train)")
    data.add_argument("--train", required=True)
    data.add_argument("--dev", help="held-out split scored before and after training")
    data.add_argument("--test", help="held-out split scored before and after training")
    data.add_argument("--captions", help="caption kind for dataset:split sources (e.g. blip2)")
    data.add_argument("--data-root", help="data folder (default: $MMIE_DATA_ROOT, else ../shared/data)")
    data.add_argument("--limit", type=int, help="only the first N records of the training split")
    data.add_argument("--eval-limit", type=int, help="only the first N records of each held-out split")
    data.add_argument("--type-probs", action="append", default=[], metavar="PREDICTIONS.jsonl",
                      help="a run's predictions whose `type_probs` give the confusable options (repeatable; "
                      "joined by record id and span); otherwise options are sampled")

    q = p.add_argument_group("questions")
    q.add_argument("--granularity", choices=("coarse", "fine"), default="coarse")
    q.add_argument("--hierarchy", default="fmnerg", help="fine mode: type hierarchy name or JSON file")
    q.add_argument("--top-k", type=int, default=5, help="options per question (gold + K-1 confusable types)")
    q.add_argument("--context", choices=("auto", "image", "caption", "none"), default="auto",
                   help="auto: the image for a VLM, the caption for a text LLM")

    m = p.add_argument_group("model and LoRA")
    m.add_argument("--base-model", required=True, help="local model directory (transformers format)")
    m.add_argument("--family", default="causal_lm", help="causal_lm, llava, image_text_to_text")
    m.add_argument("--rank", type=int, default=64)
    m.add_argument("--alpha", type=float, default=128)
    m.add_argument("--dropout", type=float, default=0.05)
    m.add_argument("--target-modules", help="comma-separated module names (default: attention + MLP "
                   "projections; for a VLM only the language model's)")
    m.add_argument("--qlora", action="store_true", help="4-bit base model via bitsandbytes (GPU only)")
    m.add_argument("--dtype", default="auto")

    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--max-steps", type=int)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--eval-batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--warmup-ratio", type=float, default=0.03)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-steps", type=int, help="save a resumable checkpoint every N steps")
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--no-progress", action="store_true")

    p.add_argument("--output", "-o", required=True, help="run folder (adapter/, last/, manifest.json)")
    p.add_argument("--resume", action="store_true", help="continue from <output>/last")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in <output>")
    p.set_defaults(func=run_reranker)


def run_reranker(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..errors import MmieError
    from ..train.lora import LoraSettings, train_reranker

    try:
        settings = LoraSettings(
            base_model=args.base_model, family=args.family, granularity=args.granularity, hierarchy=args.hierarchy,
            top_k=args.top_k, context=args.context, rank=args.rank, alpha=args.alpha, dropout=args.dropout,
            target_modules=args.target_modules.split(",") if args.target_modules else None, load_in_4bit=args.qlora,
            epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
            eval_batch_size=args.eval_batch_size, lr=args.lr, weight_decay=args.weight_decay,
            warmup_ratio=args.warmup_ratio, seed=args.seed, checkpoint_steps=args.checkpoint_steps,
            device=args.device, dtype=args.dtype, threads=args.threads,
        )
        train, held_out, data = build_splits(args, settings)
        manifest = train_reranker(settings, train, held_out, args.output, data=data, resume=args.resume,
                                  overwrite=args.overwrite, progress=False if args.no_progress else None)
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (MmieError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"output": args.output, "metrics": manifest["metrics"], "train_seconds": manifest["train_seconds"],
                      "memory": manifest["memory"]}, indent=2))
    return 0


def build_splits(args: argparse.Namespace, settings):
    """Questions for the training split and each held-out split, with how they were built."""
    from pathlib import Path

    from ..data.hierarchy import load_hierarchy
    from ..train.data import DataSource, read_records
    from ..train.rerank_data import build_examples, label_set, predicted_distributions

    hierarchy = load_hierarchy(settings.hierarchy) if settings.granularity == "fine" else None
    distributions = {}
    for path in args.type_probs:
        distributions.update(predicted_distributions(read_records(DataSource(path))))
    context = settings.resolved_context()
    sources = {"train": (args.train, args.limit), "dev": (args.dev, args.eval_limit), "test": (args.test, args.eval_limit)}
    records = {s: read_records(DataSource(spec, captions=args.captions, data_root=args.data_root, limit=limit))
               for s, (spec, limit) in sources.items() if spec}
    types = label_set(records["train"], settings.granularity) if settings.granularity == "coarse" else None
    data: dict = {"sources": {s: spec for s, (spec, _) in sources.items() if spec}, "context": context,
                  "type_probs": [str(Path(p)) for p in args.type_probs], "types": types, "build": {}}
    built = {}
    for split, recs in records.items():
        examples, stats = build_examples(recs, granularity=settings.granularity, top_k=settings.top_k, types=types,
                                         hierarchy=hierarchy, distributions=distributions, context=context,
                                         seed=settings.seed)
        built[split] = examples
        data["build"][split] = {"records": len(recs), **stats.as_dict()}
    return built.pop("train"), built, data
