"""Score thresholding and per-label non-maximum suppression, shared by every detector adapter so
that the same parameters mean the same thing whichever model produced the raw boxes."""

from __future__ import annotations

from collections.abc import Iterable

from ..records import Box, DetectedObject


def clip_box(xmin: float, ymin: float, xmax: float, ymax: float, width: int, height: int) -> Box | None:
    """A box inside the image, or None when nothing of it is left (degenerate model output)."""
    xmin, ymin, xmax, ymax = (float(v) for v in (xmin, ymin, xmax, ymax))  # numpy scalars -> exact floats
    x0, x1 = sorted((min(max(xmin, 0.0), width), min(max(xmax, 0.0), width)))
    y0, y1 = sorted((min(max(ymin, 0.0), height), min(max(ymax, 0.0), height)))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return Box(xmin=round(x0, 1), ymin=round(y0, 1), xmax=round(x1, 1), ymax=round(y1, 1))


def non_max_suppression(objects: Iterable[DetectedObject], iou_threshold: float) -> list[DetectedObject]:
    """Greedy NMS within each label: keep the best box, drop same-label boxes overlapping it more
    than `iou_threshold`. Boxes of different labels never suppress each other."""
    kept: list[DetectedObject] = []
    for obj in sorted(objects, key=lambda o: o.score, reverse=True):
        if all(k.label != obj.label or k.box.iou(obj.box) <= iou_threshold for k in kept):
            kept.append(obj)
    return kept


def filter_detections(
    objects: Iterable[DetectedObject],
    *,
    score_threshold: float,
    iou_threshold: float,
    max_objects: int,
    labels: Iterable[str] | None = None,
) -> list[DetectedObject]:
    """Threshold, optional label allow-list, NMS, then the `max_objects` best by score."""
    wanted = set(labels) if labels else None
    candidates = [o for o in objects if o.score >= score_threshold and (wanted is None or o.label in wanted)]
    return non_max_suppression(candidates, iou_threshold)[:max_objects]
