"""HTML pieces of the report: one self-contained page (inline CSS and JS, images as data URLs,
boxes as SVG rectangles), so it opens from a file, offline, with nothing to serve."""

from __future__ import annotations

import base64
import io
from collections import Counter
from html import escape
from typing import Any, Iterable

from ..metrics.prf import PRF
from ..metrics.tasks import TaskResult
from ..records import Box, Entity, Record
from .analysis import NONE, EntityMark, RecordAnalysis, RelationMark

STATUS_LABEL = {
    "correct": "correct",
    "wrong_type": "wrong type",
    "wrong_box": "wrong box",
    "wrong_label": "wrong label",
    "spurious": "spurious",
    "missed": "missed",
}
THUMBNAIL_SIDE = 512

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232a;background:#f4f5f7}
header.page{background:#1d3557;color:#fff;padding:16px 24px}
header.page h1{margin:0 0 4px;font-size:20px} header.page p{margin:0;opacity:.85}
main{padding:16px 24px;max-width:1200px}
h2{font-size:17px;margin:24px 0 8px} h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;background:#fff;margin:4px 0 12px}
th,td{border:1px solid #d5d9de;padding:3px 8px;text-align:right;font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left} thead th{background:#e9edf2}
td.diag{background:#d8f0d8} td.off{background:#fde2d8} td.zero{color:#aab}
.legend span{margin-right:14px;white-space:nowrap}
.controls{position:sticky;top:0;background:#f4f5f7;padding:8px 0;z-index:2;border-bottom:1px solid #d5d9de}
.controls select,.controls input{font:inherit;padding:2px 6px;margin-right:8px}
section.record{background:#fff;border:1px solid #d5d9de;border-radius:6px;margin:12px 0;padding:10px 14px;display:grid;grid-template-columns:minmax(0,1fr) 340px;gap:14px}
section.record.hidden{display:none}
.record h3{grid-column:1/-1;margin:0;font-size:14px;display:flex;gap:10px;align-items:baseline}
.record h3 .id{font-family:ui-monospace,monospace}
.badge{font-size:12px;border-radius:10px;padding:0 7px;font-weight:normal}
.post{font-size:15px;white-space:pre-wrap;word-break:break-word;margin:4px 0 10px}
mark{border-radius:3px;padding:0 2px}
mark.correct{background:#c7ecc7;border-bottom:2px solid #2e8b2e}
mark.wrong_type,mark.wrong_label,mark.wrong_box{background:#ffe8a8;border-bottom:2px solid #c99400}
mark.spurious{background:#ffd0c8;border-bottom:2px solid #d4351c}
mark.missed{background:#dde7ff;border-bottom:2px dashed #3559c7}
mark sup{font-size:10px;margin-left:2px;color:#333}
.badge.correct{background:#c7ecc7} .badge.wrong_type,.badge.wrong_label,.badge.wrong_box{background:#ffe8a8}
.badge.spurious{background:#ffd0c8} .badge.missed{background:#dde7ff} .badge.errors{background:#d4351c;color:#fff}
table.ents{width:100%;font-size:13px} table.ents td,table.ents th{text-align:left}
figure{margin:0} figure svg{width:100%;height:auto;border:1px solid #d5d9de;background:#eceff3}
figcaption{font-size:12px;color:#555}
rect.box-pred{fill:none;stroke:#f26b00;stroke-width:3;vector-effect:non-scaling-stroke}
rect.box-gold{fill:none;stroke:#0a84ff;stroke-width:3;stroke-dasharray:7 4;vector-effect:non-scaling-stroke}
text.box-label{font-family:sans-serif;font-weight:bold;paint-order:stroke;stroke:#fff;stroke-width:3px;vector-effect:non-scaling-stroke}
text.box-label.pred{fill:#b84f00} text.box-label.gold{fill:#0a5fc2}
.swatch{display:inline-block;width:22px;height:0;vertical-align:middle;margin-right:4px}
.swatch.pred{border-top:3px solid #f26b00} .swatch.gold{border-top:3px dashed #0a84ff}
dl.extra{font-size:13px;margin:6px 0} dl.extra dt{font-weight:600;color:#444} dl.extra dd{margin:0 0 6px;white-space:pre-wrap}
ul.errors{color:#a1260d;font-size:13px;margin:6px 0;padding-left:18px}
.cell{background:#fff;border:1px solid #d5d9de;border-radius:6px;padding:4px 14px;margin:12px 0}
.cell summary{cursor:pointer;font-weight:600;padding:6px 0}
.muted{color:#666}
"""

JS = """
function applyFilter(root){
  var sel=root.querySelector('select.filter'), q=root.querySelector('input.search');
  var want=sel?sel.value:'all', text=(q?q.value:'').toLowerCase(), shown=0;
  root.querySelectorAll('section.record').forEach(function(s){
    var st=s.getAttribute('data-status').split(' ');
    var ok=(want==='all'||st.indexOf(want)>=0)&&(!text||s.textContent.toLowerCase().indexOf(text)>=0);
    s.classList.toggle('hidden',!ok); if(ok)shown++;
  });
  var n=root.querySelector('.shown'); if(n)n.textContent=shown;
}
document.querySelectorAll('.records').forEach(function(root){
  root.querySelectorAll('select.filter,input.search').forEach(function(el){
    el.addEventListener('input',function(){applyFilter(root);});
  });
});
"""


def page(title: str, subtitle: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><meta name=\"viewport\" content=\"width=device-width\">"
        f"<style>{CSS}</style></head><body>"
        f"<header class=\"page\"><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        f"<main>{body}</main><script>{JS}</script></body></html>\n"
    )


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _prf_cells(prf: PRF) -> str:
    return "".join(f"<td>{v}</td>" for v in (pct(prf.precision), pct(prf.recall), pct(prf.f1), prf.tp, prf.n_pred, prf.n_gold))


def scores_table(result: TaskResult) -> str:
    head = "<tr><th>metric</th><th>P</th><th>R</th><th>F1</th><th>tp</th><th>pred</th><th>gold</th></tr>"
    rows = "".join(f"<tr><td>{escape(name)}</td>{_prf_cells(m.scores.micro)}</tr>" for name, m in result.metrics.items())
    out = f"<table class=\"scores\"><thead>{head}</thead><tbody>{rows}</tbody></table>"
    main_name, main = next(iter(result.metrics.items()))
    if main.scores.per_type:
        rows = "".join(
            f"<tr><td>{escape(kind)}</td>{_prf_cells(prf)}</tr>" for kind, prf in sorted(main.scores.per_type.items())
        )
        out += (
            f"<h3>Per type ({escape(main_name)})</h3><table class=\"per-type\"><thead>"
            f"{head.replace('metric', 'type')}</thead><tbody>{rows}</tbody></table>"
        )
    extra = main.scores.extra
    if "accuracy" in extra:
        out += f"<p>Accuracy (None included): {pct(extra['accuracy'])} over {extra.get('accuracy_support', 0)} gold pairs.</p>"
    c = result.counts
    out += (
        f"<p class=\"muted\">{c.get('records', 0)} records scored; {c.get('error_records', 0)} with errors "
        f"(scored as empty predictions); {c.get('missing_predictions', 0)} without a prediction; "
        f"{c.get('unknown_predictions', 0)} predictions not in gold.</p>"
    )
    return out


def confusion_table(confusion: Counter, what: str = "type") -> str:
    if not confusion:
        return "<p class=\"muted\">Nothing to tabulate.</p>"
    labels = sorted(({g for g, _ in confusion} | {p for _, p in confusion}) - {NONE}) + [NONE]
    head = "".join(f"<th>{escape(x)}</th>" for x in labels)
    rows = []
    for g in labels:
        cells = []
        for p in labels:
            n = confusion.get((g, p), 0)
            cls = "zero" if n == 0 else ("diag" if g == p else "off")
            cells.append(f"<td class=\"{cls}\">{n}</td>")
        rows.append(f"<tr><th>{escape(g)}</th>{''.join(cells)}</tr>")
    return (
        f"<p class=\"muted\">Rows: gold {what}; columns: predicted {what}, paired by span. "
        f"{NONE} = no entity on that span (missed in the last column, spurious in the last row).</p>"
        f"<table class=\"confusion\"><thead><tr><th>gold \\ predicted</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


# -- one record ---------------------------------------------------------------------------------

def _type_label(entity: Entity) -> str:
    return entity.fine_type or entity.type or "?"


def highlighted_text(text: str, marks: list[EntityMark]) -> str:
    """The post with each mark wrapped; a mark overlapping an earlier one is listed only in the table."""
    out, pos = [], 0
    for mark in sorted(marks, key=lambda m: (m.entity.start, -m.entity.end, m.source != "pred")):
        e = mark.entity
        if e.start < pos or e.end > len(text):
            continue
        out.append(escape(text[pos:e.start]))
        label = _type_label(e)
        if mark.status == "wrong_type" and mark.partner is not None:
            label = f"{label} (gold {_type_label(mark.partner)})"
        elif mark.status == "wrong_box":
            label = f"{label}, box off"
        elif mark.status == "missed":
            label = f"missed {label}"
        out.append(
            f"<mark class=\"{mark.status}\" data-source=\"{mark.source}\" title=\"{escape(STATUS_LABEL[mark.status])}: "
            f"{escape(label)}\">{escape(text[e.start:e.end])}<sup>{escape(label)}</sup></mark>"
        )
        pos = e.end
    out.append(escape(text[pos:]))
    return "".join(out)


def _box_text(box: Box) -> str:
    return f"({box.xmin:g}, {box.ymin:g}, {box.xmax:g}, {box.ymax:g})"


def entity_table(marks: list[EntityMark]) -> str:
    if not marks:
        return "<p class=\"muted\">No predicted or gold entities.</p>"
    rows = []
    for m in marks:
        e = m.entity
        pred = e if m.source == "pred" else None
        gold = m.partner if m.source == "pred" else e
        extra = []
        description = getattr(e, "description", None)
        if description:
            extra.append(escape(description))
        if e.score is not None:
            extra.append(f"score {e.score:.2f}")
        prob = getattr(e, "groundable_prob", None)
        if prob is not None:
            extra.append(f"groundable p={prob:.2f}")
        rows.append(
            f"<tr class=\"{m.status}\"><td>{escape(e.text)}</td><td><span class=\"badge {m.status}\">"
            f"{STATUS_LABEL[m.status]}</span></td><td>{escape(_type_label(pred)) if pred else ''}</td>"
            f"<td>{escape(_type_label(gold)) if gold else ''}</td><td>{'; '.join(extra)}</td></tr>"
        )
    return (
        "<table class=\"ents\"><thead><tr><th>entity</th><th>status</th><th>predicted</th><th>gold</th>"
        f"<th>description / scores</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def relation_table(marks: list[RelationMark]) -> str:
    if not marks:
        return "<p class=\"muted\">No predicted or gold relations (other than None).</p>"
    rows = []
    for m in marks:
        r = m.relation
        pred = r.label if m.source == "pred" else ""
        gold = (m.partner.label if m.partner else "") if m.source == "pred" else r.label
        rows.append(
            f"<tr class=\"{m.status}\"><td>{escape(r.head.text)}</td><td>{escape(r.tail.text)}</td>"
            f"<td><span class=\"badge {m.status}\">{STATUS_LABEL[m.status]}</span></td>"
            f"<td>{escape(pred)}</td><td>{escape(gold)}</td></tr>"
        )
    return (
        "<table class=\"ents relations\"><thead><tr><th>head</th><th>tail</th><th>status</th><th>predicted</th>"
        f"<th>gold</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def image_data_url(ref: str) -> tuple[str, int, int] | None:
    """A downscaled JPEG of the post image as a data URL plus the original size (boxes stay in
    original pixels through the SVG viewBox), or None when the image cannot be read."""
    from ..images import ImageError, load_image

    try:
        loaded = load_image(ref)
    except (ImageError, ImportError):
        return None
    image = loaded.image
    width, height = image.size
    thumb = image.copy()
    thumb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), width, height


def _size_hint(record: Record, boxes: Iterable[Box]) -> tuple[int, int]:
    meta = record.meta or {}
    for w_key, h_key in (("width", "height"), ("image_width", "image_height")):
        if isinstance(meta.get(w_key), (int, float)) and isinstance(meta.get(h_key), (int, float)):
            return int(meta[w_key]), int(meta[h_key])
    boxes = list(boxes)
    return (int(max((b.xmax for b in boxes), default=400) * 1.05) or 400,
            int(max((b.ymax for b in boxes), default=300) * 1.05) or 300)


def image_figure(record: Record, pred: list[Entity], gold: list[Entity]) -> str:
    """The image with predicted (solid orange) and gold (dashed blue) boxes, labelled by entity."""
    pred_boxes = [(e, b) for e in pred if e.groundable is not False for b in e.boxes[:1]]
    gold_boxes = [(e, b) for e in gold for b in e.boxes]
    if not record.image and not pred_boxes and not gold_boxes:
        return ""
    embedded = image_data_url(record.image) if record.image else None
    if embedded:
        url, width, height = embedded
        background = f"<image href=\"{url}\" x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\"/>"
        note = ""
    else:
        width, height = _size_hint(record, [b for _, b in pred_boxes + gold_boxes])
        background = f"<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#d9dde3\"/>"
        note = (f"image not available ({escape(record.image)}); boxes on a blank canvas" if record.image
                else "no image in the record; boxes on a blank canvas")
    shapes = []
    font = max(12, round(max(width, height) / 28))  # about 12 px on screen whatever the image size
    for kind, items in (("gold", gold_boxes), ("pred", pred_boxes)):
        for entity, box in items:
            label = escape(f"{entity.text} ({_type_label(entity)})")
            # Predicted labels sit on the box's top edge, gold labels inside its bottom edge.
            if kind == "pred":
                y_text = box.ymin - font * 0.3 if box.ymin > font else box.ymin + font
            else:
                y_text = box.ymax - font * 0.4
            shapes.append(
                f"<g class=\"box {kind}\" data-entity=\"{escape(entity.text)}\"><title>{kind}: {label} {_box_text(box)}</title>"
                f"<rect class=\"box-{kind}\" x=\"{box.xmin:g}\" y=\"{box.ymin:g}\" width=\"{box.xmax - box.xmin:g}\" "
                f"height=\"{box.ymax - box.ymin:g}\"/><text class=\"box-label {kind}\" font-size=\"{font}\" "
                f"x=\"{box.xmin + 3:g}\" y=\"{y_text:g}\">{label}</text></g>"
            )
    caption = f"{len(pred_boxes)} predicted, {len(gold_boxes)} gold box(es)"
    if note:
        caption += f"; {note}"
    return (
        f"<figure><svg viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\" "
        f"preserveAspectRatio=\"xMidYMid meet\">{background}{''.join(shapes)}</svg>"
        f"<figcaption><span class=\"swatch pred\"></span>predicted <span class=\"swatch gold\"></span>gold · "
        f"{caption}</figcaption></figure>"
    )


def _extras(record: Record) -> str:
    items = []
    for label, value in (
        ("caption", record.caption),
        ("visual context", record.visual_context),
        ("knowledge", record.knowledge),
    ):
        if value:
            items.append(f"<dt>{label}</dt><dd>{escape(value)}</dd>")
    if record.objects:
        objs = ", ".join(f"{o.label} {o.score:.2f}" for o in record.objects[:20])
        items.append(f"<dt>objects</dt><dd>{escape(objs)}</dd>")
    if record.ocr:
        items.append(f"<dt>OCR</dt><dd>{escape(' | '.join(o.text for o in record.ocr[:20]))}</dd>")
    if record.examples:
        items.append(f"<dt>few-shot examples</dt><dd>{escape(', '.join(record.examples))}</dd>")
    return f"<dl class=\"extra\">{''.join(items)}</dl>" if items else ""


def record_view(index: int, record: Record, analysis: RecordAnalysis, *, has_prediction: bool = True) -> str:
    counts = analysis.counts()
    statuses = set(counts)
    if record.errors:
        statuses.add("errors")
    if statuses - {"correct"}:
        statuses.add("mistakes")
    if not has_prediction:
        statuses.add("errors")
    badges = "".join(
        f"<span class=\"badge {s}\">{n} {STATUS_LABEL[s]}</span>" for s, n in sorted(counts.items())
    )
    if record.errors:
        badges += f"<span class=\"badge errors\">{len(record.errors)} error(s)</span>"
    if not has_prediction:
        badges += "<span class=\"badge errors\">no prediction</span>"
    pred = [m.entity for m in analysis.entities if m.source == "pred"]
    gold = [m.partner for m in analysis.entities if m.source == "pred" and m.partner is not None]
    gold += [m.entity for m in analysis.entities if m.source == "gold"]
    left = [f"<div class=\"post\">{highlighted_text(record.text or '', analysis.entities)}</div>"]
    left.append(relation_table(analysis.relations) if analysis.relations else entity_table(analysis.entities))
    left.append(_extras(record))
    if record.errors:
        left.append("<ul class=\"errors\">" + "".join(
            f"<li>{escape(e.stage)} ({e.kind}): {escape(e.reason)}</li>" for e in record.errors) + "</ul>")
    right = image_figure(record, pred, gold)
    return (
        f"<section class=\"record\" id=\"record-{index}\" data-id=\"{escape(record.id)}\" "
        f"data-status=\"{' '.join(sorted(statuses)) or 'correct'}\"><h3><span class=\"id\">{escape(record.id)}</span>"
        f"{badges}</h3><div>{''.join(left)}</div><div>{right}</div></section>"
    )


def records_block(views: list[str], total: int) -> str:
    options = "".join(
        f"<option value=\"{v}\">{label}</option>"
        for v, label in (("all", "all records"), ("mistakes", "with any mistake"), ("wrong_type", "wrong type"),
                         ("wrong_label", "wrong label"), ("wrong_box", "wrong box"), ("spurious", "spurious"), ("missed", "missed"),
                         ("errors", "with errors"), ("correct", "with a correct item"))
    )
    legend = (
        "<p class=\"legend\"><span><mark class=\"correct\">correct</mark></span><span><mark class=\"wrong_type\">"
        "wrong type</mark></span><span><mark class=\"spurious\">spurious</mark></span><span><mark class=\"missed\">"
        "missed</mark></span><span><span class=\"swatch pred\"></span>predicted box</span><span>"
        "<span class=\"swatch gold\"></span>gold box</span></p>"
    )
    shown = f"showing <span class=\"shown\">{len(views)}</span> of {total} records"
    return (
        f"<div class=\"records\"><div class=\"controls\"><select class=\"filter\">{options}</select>"
        f"<input class=\"search\" type=\"search\" placeholder=\"search text or id\"> {shown}{legend}</div>"
        f"{''.join(views)}</div>"
    )


def key_value_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class=\"kv\"><tbody>{body}</tbody></table>"
