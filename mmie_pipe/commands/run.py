"""`mmie-pipe run PIPELINE --input F.jsonl`: run a pipeline, resumably, into a run directory."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ..errors import ConfigError, ExitCode, MmieError
from ..pipeline import load_pipeline, validate_pipeline
from ..redact import redact
from ..runner import PREDICTIONS, Runner, StrictModeError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a pipeline over a JSONL file (resumes an interrupted run)")
    p.add_argument("pipeline", help="shipped pipeline name (see `mmie-pipe ls`) or a YAML file")
    p.add_argument("--input", "-i", required=True, type=Path, help="input JSONL, one post per line")
    p.add_argument("--output", "-o", type=Path, help="run directory (default: runs/PIPELINE-INPUTSTEM)")
    p.add_argument("--limit", type=non_negative_int, help="process only the first N input lines")
    add_config_options(p)
    p.add_argument("--strict", action="store_true", help="stop at the first record error")
    p.add_argument("--overwrite", action="store_true", help="discard a previous run in the output directory")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the generation cache")
    p.add_argument("--prices", help="price table YAML for the cost estimate (default: the shipped OpenAI example)")
    p.add_argument("--cache", metavar="LOCATION",
                   help="generation cache: a SQLite file or redis://host:port/db (runtime.cache_path)")
    p.add_argument("--executor", choices=["local", "ray"], help="where records run (runtime.executor; default local)")
    p.add_argument("--ray-address", help="an existing Ray cluster (runtime.ray.address; default: start a local one)")
    p.add_argument("--replicas", type=positive_int, help="Ray actors, one model replica each (runtime.ray.replicas)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: on a terminal only)")
    p.set_defaults(func=run_command)


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {value}")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", "-p", help="backend profile (see `mmie-pipe ls`) or a profile YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. stages.extract.params.shots=4 (repeatable)")


def cost_line(tokens_by_model: dict, prices: str | None) -> str:
    from ..pricing import bill, format_cost, load_prices

    try:
        table = load_prices(prices)
    except ConfigError as exc:
        return f"  cost: n/a ({exc})"
    spent = bill(tokens_by_model, table)
    line = f"  tokens: {spent.prompt_tokens} in, {spent.completion_tokens} out; estimated cost "
    if not any(any(counts.values()) for counts in tokens_by_model.values()):
        return line + "none (no model was asked anything in this run)"
    if spent.cost is None:
        return line + f"n/a (no price for {', '.join(spent.unpriced)}; see --prices)"
    return line + format_cost(spent.cost, table.currency)


def make_runner(config) -> Runner:
    if config.runtime.executor == "ray":
        from ..distributed import RayExecutor

        return RayExecutor(config)
    return Runner(config)


def run_command(args: argparse.Namespace) -> int:
    try:
        raw, source = load_pipeline(args.pipeline, profile=args.profile, overrides=args.overrides)
        runtime = raw.setdefault("runtime", {})
        if args.no_cache:
            runtime["cache"] = False
        if args.cache:
            runtime["cache_path"] = args.cache
        if args.executor:
            runtime["executor"] = args.executor
        if args.ray_address:
            runtime.setdefault("ray", {})["address"] = args.ray_address
        if args.replicas:
            runtime.setdefault("ray", {})["replicas"] = args.replicas
        report = validate_pipeline(raw, source)
        if not report.ok:
            raise ConfigError("invalid pipeline:\n  " + "\n  ".join(report.problems))
        if not args.input.is_file():
            raise ConfigError(f"input file {args.input} does not exist")
        output = args.output or Path("runs") / f"{report.config.name}-{args.input.stem}"
        runner = make_runner(report.config)
        summary = asyncio.run(
            runner.run(args.input, output, limit=args.limit, strict=args.strict, progress=args.progress,
                       source=source, overwrite=args.overwrite)
        )
    except StrictModeError as exc:
        print(f"error (--strict): {redact(str(exc))}", file=sys.stderr)
        return ExitCode.RECORD_ERRORS
    except MmieError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return ExitCode.REFUSED
    s = summary.as_dict()
    print(f"{s['records']} records written ({s['ok']} ok, {s['errors']} with errors), "
          f"{s['resumed_skipped']} already done; {s['model_calls']} model calls, {s['cache_hits']} cache hits, "
          f"{s['prompt_tokens'] + s['completion_tokens']} tokens; {s['seconds']:.1f}s")
    print(cost_line(s["tokens_by_model"], args.prices))
    for stage, count in sorted(s["errors_by_stage"].items()):
        print(f"  errors in {stage}: {count}")
    for note in runner.context.notes:
        print(f"  note: {redact(note)}")
    print(f"predictions: {output / PREDICTIONS}")
    if summary.stopped:
        print(f"error: {redact(summary.stopped)}", file=sys.stderr)
        return ExitCode.STOPPED
    return ExitCode.RECORD_ERRORS if summary.errors else ExitCode.OK
