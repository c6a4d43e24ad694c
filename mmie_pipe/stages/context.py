"""Prompt pieces several stages share: the image as words, clipped text."""

from __future__ import annotations

from collections.abc import Sequence

from ..records import Record


def clip(text: str, limit: int) -> str:
    """Whitespace collapsed, cut to `limit` characters (with an ellipsis when cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 3)].rstrip() + "..."


def image_words(record: Record, fields: Sequence[str], limit: int) -> str:
    """The first of `fields` (visual_context, caption) the record has, clipped; "" when none."""
    for field in fields:
        value = getattr(record, field, None)
        if value and value.strip():
            return clip(value, limit)
    return ""
