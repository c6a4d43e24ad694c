"""`mmie-pipe ls`: shipped pipelines, stages, backends and profiles."""

from __future__ import annotations

import argparse
import sys

import yaml

from .. import registry
from ..pipeline import available_pipelines, available_profiles


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ls", help="list pipelines, stages, backends and profiles")
    p.add_argument("what", nargs="?", choices=["pipelines", "stages", "backends", "profiles"], help="only one kind")
    p.set_defaults(func=ls_command)


def _first_line(text: str) -> str:
    return " ".join((text or "").split())[:100]


def ls_command(args: argparse.Namespace) -> int:
    if args.what in (None, "pipelines"):
        print("pipelines:")
        for name, path in sorted(available_pipelines().items()):
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
            print(f"  {name:<16} {_first_line(data.get('description', ''))}")
    if args.what in (None, "stages"):
        print("stages:")
        for name in registry.stages.names():
            versions = registry.stages.versions(name)
            cls = registry.stages.get(name)
            io = f"reads {','.join(cls.reads) or '-'}; writes {','.join(cls.writes) or '-'}"
            print(f"  {name:<16} v{','.join(map(str, versions)):<4} {io}")
    if args.what in (None, "backends"):
        print("backends:")
        for name in registry.backends.names():
            cls = registry.backends.get(name)
            # A module holding several backends (detectors, OCR engines) describes each in its class.
            doc = cls.__dict__.get("__doc__") if cls.__module__.endswith((".detectors", ".ocr")) else None
            print(f"  {name:<16} {_first_line(doc or sys.modules[cls.__module__].__doc__ or '')}")
    if args.what in (None, "profiles"):
        print("profiles:")
        for name, path in sorted(available_profiles().items()):
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
            print(f"  {name:<16} {_first_line(data.get('description', ''))}")
    return 0
