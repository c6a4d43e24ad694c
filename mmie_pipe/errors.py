"""Exceptions with enough context to become a clear per-record error."""


class MmieError(Exception):
    """Base class for errors mmie-pipe reports to the user."""


class ConfigError(MmieError):
    """A pipeline, profile or override is invalid. Raised before any model is loaded."""


class MissingDependency(MmieError):
    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the optional package {package!r}; install it with "
            f"`pip install 'mmie-pipe[{extra}]'`"
        )


class ModelCallError(MmieError):
    """A model call failed after retries (or with a non-retryable error)."""

    def __init__(self, message: str, *, attempts: int = 1, status: int | None = None):
        super().__init__(message)
        self.attempts = attempts
        self.status = status


class ParseError(MmieError):
    """A model answer could not be parsed into the requested type (after any re-asks)."""


class StageInputError(MmieError):
    """A record lacks what a stage needs, or has it in a form the stage cannot use."""


class ExitCode:
    """The command line's exit statuses (README, docs/reliability.md)."""

    OK = 0  # every record ok
    RECORD_ERRORS = 1  # the run finished (or --strict stopped it) with records that failed
    REFUSED = 2  # refused to start: bad config, bad arguments, unusable paths, a locked output folder
    STOPPED = 3  # stopped early by the error budget; finished records are kept, rerun to resume
    CRASH = 4  # an internal error (a bug): the traceback is printed
    INTERRUPTED = 130  # Ctrl-C or SIGTERM; rerun to resume


class CacheUnavailableError(MmieError):
    """A shared cache server (Redis) stayed unreachable after retries; the record that needed it
    gets this error and is redone on resume."""
