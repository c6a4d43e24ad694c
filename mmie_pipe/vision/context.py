"""The ITA-style text view of an image: object tags, caption and OCR text as plain text, so text-only
LLMs and taggers can use what the vision stages found (Wang et al., 2022, "ITA: Image-Text
Alignments for Multi-Modal Named Entity Recognition", align images to text this way)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..records import DetectedObject, OcrLine

PART_NAMES = ("objects", "caption", "ocr")
DEFAULT_LABELS = {"objects": "objects", "caption": "caption", "ocr": "text in image"}


@dataclass(frozen=True)
class ContextStyle:
    order: tuple[str, ...] = PART_NAMES
    max_objects: int = 10
    min_object_score: float = 0.0
    dedupe_objects: bool = True  # "person person dog" says no more than "person dog" to a tagger
    max_ocr_lines: int = 10
    min_ocr_score: float = 0.0
    max_chars: int = 512
    separator: str = " | "
    labelled: bool = False  # prefix each part with its name ("objects: ...")


def object_tags(objects: Sequence[DetectedObject], style: ContextStyle) -> str:
    tags: list[str] = []
    for obj in sorted(objects, key=lambda o: o.score, reverse=True):
        if obj.score < style.min_object_score or (style.dedupe_objects and obj.label in tags):
            continue
        tags.append(obj.label)
        if len(tags) >= style.max_objects:
            break
    return " ".join(tags)


def ocr_text(lines: Sequence[OcrLine], style: ContextStyle) -> str:
    kept = [line.text for line in lines if line.score >= style.min_ocr_score][: style.max_ocr_lines]
    return " ".join(kept)


def truncate_words(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary when there is one."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" |,;:")


def build_visual_context(
    *,
    objects: Sequence[DetectedObject] | None,
    caption: str | None,
    ocr: Sequence[OcrLine] | None,
    style: ContextStyle,
) -> str | None:
    """The parts that exist, in `style.order`, joined and truncated; None when nothing exists."""
    values = {
        "objects": object_tags(objects or (), style),
        "caption": " ".join((caption or "").split()),
        "ocr": ocr_text(ocr or (), style),
    }
    parts = []
    for name in style.order:
        value = values[name].strip()
        if value:
            parts.append(f"{DEFAULT_LABELS[name]}: {value}" if style.labelled else value)
    if not parts:
        return None
    return truncate_words(style.separator.join(parts), style.max_chars) or None
