"""The `mmie-pipe` command line: one argparse tree assembled from `mmie_pipe.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import traceback

from . import __version__
from .commands import COMMAND_MODULES
from .errors import ExitCode
from .redact import RedactingFilter, redact


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmie-pipe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mmie-pipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:  # a command whose module is not there yet
            if exc.name and exc.name.endswith(f"commands.{name}"):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # argparse exits with 2 (REFUSED) on bad arguments
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    # One line per HTTP request drowns the run's own messages.
    for noisy in ("httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    # SIGTERM (a job scheduler, `kill`) ends a run like Ctrl-C: outputs flushed, servers stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:  # `mmie-pipe eval ... | head`
        sys.stderr.close()
        return ExitCode.OK
    except Exception:  # noqa: BLE001 - a bug: its own status, never mistaken for record errors
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        print(f"internal error (exit {ExitCode.CRASH}); outputs written so far are kept, "
              "please report this with the traceback above", file=sys.stderr)
        return ExitCode.CRASH


if __name__ == "__main__":
    raise SystemExit(main())
