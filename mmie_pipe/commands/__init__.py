"""CLI sub-commands. Each module exposes `register(subparsers)` and sets `func` on its parser."""

COMMAND_MODULES = ("run", "ls", "validate", "cache", "data", "eval", "train", "finetune", "bench", "report")
