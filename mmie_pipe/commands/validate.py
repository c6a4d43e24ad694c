"""`mmie-pipe validate FILE`: check a pipeline before any model is loaded."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError, ExitCode
from ..pipeline import load_pipeline, validate_pipeline
from .run import add_config_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a pipeline: stages, parameters, backends, read/write chain")
    p.add_argument("pipeline", help="shipped pipeline name or a YAML file")
    add_config_options(p)
    p.set_defaults(func=validate_command)


def validate_command(args: argparse.Namespace) -> int:
    try:
        raw, source = load_pipeline(args.pipeline, profile=args.profile, overrides=args.overrides)
        report = validate_pipeline(raw, source)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    if not report.ok:
        print(f"invalid: {source}", file=sys.stderr)
        for problem in report.problems:
            print(f"  - {problem}", file=sys.stderr)
        return ExitCode.REFUSED
    stages = " -> ".join(s.stage for s in report.config.stages)
    print(f"ok: {source}: {stages}")
    return ExitCode.OK
