"""Versioned prompt templates: package files under `prompts/`, rendered in Jinja's sandbox.

A template's file name carries its version (`extract.fewshot.v1.jinja`); a changed prompt is a new
file, so old pipelines keep their old prompts and cache keys change only when the text does.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from .errors import ConfigError

PACKAGE_PROMPTS = resources.files("mmie_pipe") / "prompts"

_env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)


def available_templates() -> list[str]:
    return sorted(p.name for p in PACKAGE_PROMPTS.iterdir() if p.name.endswith((".jinja", ".txt")))


@lru_cache(maxsize=None)
def template_source(name: str) -> str:
    """A shipped template by file name, or a user's template by path."""
    path = Path(name)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    resource = PACKAGE_PROMPTS / name
    if not resource.is_file():
        raise ConfigError(f"unknown prompt template {name!r}; shipped: {', '.join(available_templates())}")
    return resource.read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def _compiled(name: str):
    return _env.from_string(template_source(name))


def render(name: str, **variables: Any) -> str:
    return _compiled(name).render(**variables)


def check_template(name: str) -> str:
    """For a parameter validator: `name` unchanged if the template exists, else a ValueError, so
    `validate` reports a missing prompt file before any model loads."""
    try:
        template_source(name)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"prompt template {name!r} cannot be read: {exc}") from None
    return name
