"""`mmie-pipe report`: the HTML page rendered by a real headless Chromium, and its numbers against
`mmie-pipe eval`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from browser import dump_dom, screenshot
from mmie_pipe.cli import main
from mmie_pipe.metrics import join_by_id
from mmie_pipe.records import Entity
from mmie_pipe.report.analysis import analyse


def _photo(name: str) -> Path:
    if name == "grace_hopper.jpg":
        mpl = pytest.importorskip("matplotlib")
        return Path(mpl.get_data_path()) / "sample_data" / name
    skimage = pytest.importorskip("skimage")
    return Path(skimage.__file__).parent / "data" / name


def ent(text: str, post: str, etype: str, box=None, **extra) -> dict:
    start = post.index(text)
    out = {"text": text, "start": start, "end": start + len(text), "type": etype, **extra}
    if box is not None:
        out["boxes"] = [dict(zip(("xmin", "ymin", "xmax", "ymax"), box))]
        out["groundable"] = True
    return out


# Entity descriptions (RiVEG-style) arrive with the runtime for per-item methods.
DESCRIPTION = {"description": "a NASA astronaut"} if "description" in Entity.model_fields else {}


def gmner_run(tmp_path: Path) -> Path:
    """A GMNER-style run directory over three real photos, one post without an image and one input
    line that failed: every status of the report appears once at least."""
    posts = []
    t1 = "Eileen Collins flew with NASA to Houston"
    posts.append({
        "id": "astronaut", "text": t1, "image": str(_photo("astronaut.png")),
        "knowledge": "Eileen Collins is a retired NASA astronaut.",
        "entities": [ent("Eileen Collins", t1, "PER", (120, 30, 400, 500), **DESCRIPTION),
                     ent("Houston", t1, "PER"), ent("flew", t1, "OTHER")],
        "gold": {"entities": [ent("Eileen Collins", t1, "PER", (110, 20, 420, 510)), ent("NASA", t1, "ORG"),
                              ent("Houston", t1, "LOC")]},
    })
    t2 = "Morning coffee at Starbucks in Seattle"
    posts.append({
        "id": "coffee", "text": t2, "image": str(_photo("coffee.png")),
        "entities": [ent("Starbucks", t2, "ORG", (0, 0, 60, 60))],
        "gold": {"entities": [ent("Starbucks", t2, "ORG", (60, 20, 560, 380)), ent("Seattle", t2, "LOC")]},
    })
    t3 = "Grace Hopper at Harvard"
    posts.append({
        "id": "hopper", "text": t3, "image": str(_photo("grace_hopper.jpg")),
        "entities": [ent("Grace Hopper", t3, "PER", (100, 20, 480, 600)), ent("Harvard", t3, "ORG")],
        "gold": {"entities": [ent("Grace Hopper", t3, "PER", (110, 30, 500, 600)), ent("Harvard", t3, "ORG")]},
    })
    t4 = "Obama speaks in Chicago tonight"
    posts.append({
        "id": "no-image", "text": t4, "meta": {"width": 640, "height": 480},
        "entities": [ent("Obama", t4, "PER", (200, 100, 400, 470))],
        "gold": {"entities": [ent("Obama", t4, "PER", (210, 90, 410, 480)), ent("Chicago", t4, "LOC")]},
    })
    run = tmp_path / "run"
    run.mkdir()
    with (run / "predictions.jsonl").open("w") as out:
        for line, post in enumerate(posts, start=1):
            out.write(json.dumps({**post, "line": line}) + "\n")
        out.write(json.dumps({"id": "line-5", "line": 5, "errors": [
            {"stage": "input", "reason": "malformed JSON", "line": 5, "kind": "input"}]}) + "\n")
    return run


def test_statuses_follow_the_metrics_matching(tmp_path):
    from mmie_pipe.data.jsonl import iter_prediction_records

    joined = join_by_id(iter_prediction_records(gmner_run(tmp_path) / "predictions.jsonl"))
    by_id = {r.id: r for r in joined.records}
    marks = analyse(by_id["astronaut"], "gmner", "offsets").entities
    assert {(m.entity.text, m.status) for m in marks} == {
        ("Eileen Collins", "correct"), ("Houston", "wrong_type"), ("flew", "spurious"), ("NASA", "missed")}
    coffee = {(m.entity.text, m.status) for m in analyse(by_id["coffee"], "gmner", "offsets").entities}
    assert coffee == {("Starbucks", "wrong_box"), ("Seattle", "missed")}
    # Without grounding the same Starbucks prediction is right.
    assert ("Starbucks", "correct") in {(m.entity.text, m.status) for m in analyse(by_id["coffee"], "mner", "offsets").entities}


def test_report_scores_equal_eval(tmp_path, capsys):
    run = gmner_run(tmp_path)
    assert main(["eval", "--pred", str(run / "predictions.jsonl"), "--task", "gmner", "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    table = page.split('<table class="scores">')[1].split("</table>")[0]
    for name in ("gmner", "mner", "eeg"):
        row = re.search(rf"<tr><td>{name}</td>((?:<td>[^<]*</td>)+)</tr>", table).group(1)
        p, r, f1, tp, n_pred, n_gold = re.findall(r"<td>([^<]*)</td>", row)
        m = metrics[name]["micro"]
        assert (float(f1), int(tp), int(n_pred), int(n_gold)) == (round(100 * m["f1"], 2), m["tp"], m["pred"], m["gold"])


def test_report_renders_in_headless_chromium(tmp_path):
    run = gmner_run(tmp_path)
    assert main(["report", str(run), "-o", str(tmp_path / "report.html")]) == 0
    page = tmp_path / "report.html"
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # nothing fetched

    dom = dump_dom(page)
    sections = re.findall(r'<section class="record[^"]*" id="record-\d+" data-id="([^"]+)"', dom)
    assert sections == ["astronaut", "coffee", "hopper", "no-image", "line-5"]
    views = dom.split('<section class="record')[1:]
    count = {v.split('data-id="')[1].split('"')[0]: v for v in views}
    assert count["astronaut"].count('class="box-pred"') == 1 and count["astronaut"].count('class="box-gold"') == 1
    assert count["coffee"].count('class="box-pred"') == 1 and count["coffee"].count('class="box-gold"') == 1
    assert count["hopper"].count("data:image/jpeg;base64,") == 1
    assert "blank canvas" in count["no-image"] and count["no-image"].count('class="box-gold"') == 1
    assert 'class="missed"' in count["astronaut"] and 'class="wrong_type"' in count["astronaut"]
    assert "malformed JSON" in count["line-5"]
    assert ("a NASA astronaut" in count["astronaut"]) == bool(DESCRIPTION) and "retired NASA astronaut" in count["astronaut"]
    assert '<table class="confusion">' in dom

    from PIL import Image, ImageStat

    shot = Image.open(screenshot(page, tmp_path / "shot.png")).convert("RGB")
    spread = ImageStat.Stat(shot).stddev
    assert min(spread) > 20, spread  # a blank or single-colour page has almost no variance
    # The photos are drawn: the part of the page beside the first record is not flat.
    crop = shot.crop((shot.width // 2, 300, shot.width, 1200))
    assert len(crop.resize((64, 64)).getcolors(maxcolors=64 * 64) or []) > 200


def test_relation_report_on_real_mnre_records(tmp_path, shared_data):
    """MNRE gold from the real files; predictions: the first record right, the second with every
    label changed, the third with none (all missed)."""
    from mmie_pipe.data import load_split

    records = [r for r in load_split("mnre", "test", data_root=shared_data, limit=40)
               if r.gold and any(rel.label != "None" for rel in r.gold.relations)][:3]
    assert len(records) == 3
    lines = []
    for i, record in enumerate(records):
        data = record.model_dump(mode="json", exclude_none=True)
        relations = data["gold"]["relations"]
        if i == 1:
            relations = [{**r, "label": "/per/per/peer" if r["label"] != "/per/per/peer" else "/per/per/alumi"} for r in relations]
        data["relations"] = relations if i < 2 else []
        lines.append(json.dumps({**data, "line": i + 1}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["report", str(run), "-o", str(tmp_path / "mre.html")]) == 0
    page = (tmp_path / "mre.html").read_text()
    assert "Scores (mre, offsets matching)" in page and "Confusion of labels" in page
    views = page.split('<section class="record')[1:]
    assert len(views) == 3
    assert 'badge correct' in views[0] and 'wrong_label' not in views[0].split("</h3>")[0]
    assert 'badge wrong_label' in views[1] and 'badge missed' in views[2]
