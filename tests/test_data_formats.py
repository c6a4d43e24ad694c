"""Loaders on small files written by the tests: formats, quirks, and errors naming file and line."""

from __future__ import annotations

import json
import zipfile

import pytest

from mmie_pipe.cli import main
from mmie_pipe.data import (
    DataFormatError,
    DataRootNotFound,
    KnowledgeIndex,
    iter_blip2_captions,
    iter_owl_captions,
    iter_pgim_knowledge,
    load_fmnerg,
    load_gmner,
    load_mnre,
    load_pgim_examples,
    load_split,
    load_twitter,
    read_voc,
    resolve_data_root,
)
from mmie_pipe.records import Record

CONLL = "IMGID:1\nGeorge\tB-PER\nZimmerman\tI-PER\nshot\tO\n\nIMGID:2\nin\tO\nNew\tB-LOC\nYork\tI-LOC\n"


def write(path, text, crlf=False):
    path.write_bytes((text.replace("\n", "\r\n") if crlf else text).encode("utf-8"))
    return path


def voc_xml(*objects, width=500, height=400):
    body = "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<bndbox>\n\t\t\t<xmin>{a}</xmin>\n\t\t\t<ymin>{b}</ymin>\n"
        f"\t\t\t<xmax>{c}</xmax>\n\t\t\t<ymax>{d}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for name, (a, b, c, d) in objects
    )
    return f"<annotation>\n\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t</size>\n{body}</annotation>\n"


# --- CoNLL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("crlf", [False, True])
def test_conll_lf_and_crlf_read_the_same(tmp_path, crlf):
    records = list(load_twitter(write(tmp_path / "t.txt", CONLL, crlf), dataset="twitter2015", split="test"))
    assert [r.id for r in records] == ["1", "2"]
    assert records[0].text == "George Zimmerman shot"
    (george,) = records[0].gold.entities
    assert (george.text, george.start, george.end, george.type) == ("George Zimmerman", 0, 16, "PER")
    assert records[1].gold.entities[0].text == "New York" and "\r" not in records[1].text
    assert records[0].meta == {"dataset": "twitter2015", "split": "test", "image_id": "1.jpg",
                               "source": str(tmp_path / "t.txt"), "source_line": 1}


def test_conll_unknown_tag_names_file_and_line(tmp_path):
    path = write(tmp_path / "t.txt", CONLL.replace("York\tI-LOC", "York\tI_LOC"))
    with pytest.raises(DataFormatError) as info:
        list(load_twitter(path))
    assert str(info.value).startswith(f"{path}:9: unknown tag 'I_LOC'")
    assert info.value.line == 9


def test_conll_missing_column_and_missing_imgid(tmp_path):
    with pytest.raises(DataFormatError, match=r"t\.txt:3: expected a token and 1 tag"):
        list(load_twitter(write(tmp_path / "t.txt", CONLL.replace("Zimmerman\tI-PER", "Zimmerman"))))
    with pytest.raises(DataFormatError, match=r"u\.txt:1: token line before any IMGID"):
        list(load_twitter(write(tmp_path / "u.txt", "hello\tO\n")))


def test_duplicate_image_ids_get_unique_record_ids(tmp_path):
    records = list(load_twitter(write(tmp_path / "t.txt", CONLL + "\nIMGID:1\nagain\tO\n")))
    assert [r.id for r in records] == ["1", "2", "1#2"]
    assert records[2].meta["image_id"] == "1.jpg"


def test_stray_i_rules(tmp_path):
    path = write(tmp_path / "t.txt", "IMGID:9\nthe\tO\nYork\tI-LOC\nCity\tI-LOC\nfans\tB-PER\nclub\tI-ORG\n")
    strict = next(load_twitter(path)).gold.entities
    loose = next(load_twitter(path, rule="conlleval")).gold.entities
    assert [(e.text, e.type) for e in strict] == [("fans", "PER")]
    assert [(e.text, e.type) for e in loose] == [("York City", "LOC"), ("fans", "PER"), ("club", "ORG")]


# --- GMNER xml ---------------------------------------------------------------------------------


def gmner_files(tmp_path, xml_text):
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    write(xml_dir / "1.xml", xml_text)
    return write(tmp_path / "g.txt", CONLL), xml_dir


def test_gmner_boxes_by_entity_string(tmp_path):
    text, xml_dir = gmner_files(tmp_path, voc_xml(("George Zimmerman", (1, 2, 30, 40)), ("George Zimmerman", (50, 60, 70, 80))))
    first, second = load_gmner(text, xml_dir, split="test")
    (george,) = first.gold.entities
    assert george.groundable is True and len(george.boxes) == 2 and george.boxes[1].xmin == 50
    assert first.meta["image_size"] == [500, 400]
    # tweet 2 has no xml: its entity is ungroundable
    assert second.gold.entities[0].groundable is False and second.gold.entities[0].boxes == []


def test_truncated_xml_names_file_and_line(tmp_path):
    xml = voc_xml(("George Zimmerman", (1, 2, 30, 40)))
    text, xml_dir = gmner_files(tmp_path, xml[: xml.index("</bndbox>")])
    with pytest.raises(DataFormatError) as info:
        list(load_gmner(text, xml_dir))
    assert str(info.value).startswith(f"{xml_dir / '1.xml'}:")
    assert info.value.line is not None and "malformed xml" in info.value.message


@pytest.mark.parametrize(
    ("xml", "line", "message"),
    [
        (voc_xml(("A", ("12px", 2, 30, 40))), 9, "<xmin> is '12px', not a number"),
        (voc_xml(("A", (30, 2, 10, 40))), 6, "bad box for 'A'"),
        (voc_xml(("A", (1, 2, 30, 40))).replace("\t\t\t<ymax>40</ymax>\n", ""), 6, "lacks bndbox field(s) ymax"),
    ],
)
def test_bad_xml_content_names_line(tmp_path, xml, line, message):
    path = write(tmp_path / "1.xml", xml)
    with pytest.raises(DataFormatError) as info:
        read_voc(path)
    assert info.value.line == line and message in str(info.value)


# --- FMNERG ------------------------------------------------------------------------------------

FMNERG = (
    "IMGID:1\nGeorge\tB-person\tB-politician\nZimmerman\tI-person\tI-politician\nvisits\tO\tO\n"
    "Paris\tB-location\tB-city\n\nIMGID:2\nhello\tO\tO\n"
)


def test_fmnerg_three_columns_with_boxes(tmp_path):
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    write(xml_dir / "1.xml", voc_xml(("Paris", (0, 0, 5, 5))))
    records = list(load_fmnerg(write(tmp_path / "f.txt", FMNERG, crlf=True), split="test", xml_dir=xml_dir))
    george, paris = records[0].gold.entities
    assert (george.type, george.fine_type, george.groundable) == ("person", "politician", False)
    assert (paris.type, paris.fine_type, paris.groundable, len(paris.boxes)) == ("location", "city", True, 1)
    assert records[1].gold.entities == []


def test_fmnerg_without_imgid_and_without_boxes(tmp_path):
    text = "\n".join(line for line in FMNERG.splitlines() if not line.startswith("IMGID")) + "\n"
    records = list(load_fmnerg(write(tmp_path / "f.txt", text)))
    assert [r.id for r in records] == ["fmnerg-1", "fmnerg-2"]
    assert records[0].gold.entities[0].groundable is None


def test_fmnerg_layers_must_agree(tmp_path):
    path = write(tmp_path / "f.txt", FMNERG.replace("visits\tO\tO", "visits\tO\tB-event"))
    with pytest.raises(DataFormatError, match=r"f\.txt:4: coarse and fine tag columns mark different"):
        list(load_fmnerg(path))


def test_fmnerg_convert_command(tmp_path):
    path = write(tmp_path / "f.txt", FMNERG)
    out = tmp_path / "out" / "f.jsonl"
    assert main(["data", "convert", "fmnerg", "--split", "test", "--path", str(path), "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and Record.model_validate_json(lines[0]).gold.entities[0].fine_type == "politician"


# --- MNRE --------------------------------------------------------------------------------------

MNRE_LINE = (
    "{'token': ['Rafael', 'Nadal', 'marries', 'Mery', 'Perello'], 'h': {'name': 'Rafael Nadal', 'pos': [0, 2]}, "
    "'t': {'name': 'Mery Perello', 'pos': [3, 5]}, 'img_id': 'twitter_1.jpg', 'relation': '/per/per/couple'}"
)


def test_mnre_crlf_and_ids(tmp_path):
    records = list(load_mnre(write(tmp_path / "m.txt", f"{MNRE_LINE}\n{MNRE_LINE}\n", crlf=True), split="test"))
    assert [r.id for r in records] == ["twitter_1#L1", "twitter_1#L2"]
    (relation,) = records[0].gold.relations
    assert (relation.head.text, relation.tail.text, relation.label) == ("Rafael Nadal", "Mery Perello", "/per/per/couple")
    assert relation.head.type is None and records[0].meta["image_id"] == "twitter_1.jpg"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (MNRE_LINE[:-10], "not a Python literal"),
        ("__import__('os').system('echo pwned')", "not a Python literal"),
        ("['a', 'b']", "expected a dict literal"),
        (MNRE_LINE.replace("'pos': [3, 5]", "'pos': [3, 9]"), "outside the 5 tokens"),
        (MNRE_LINE.replace("'relation'", "'rel'"), "missing key(s): relation"),
    ],
)
def test_mnre_bad_line_names_file_and_line(tmp_path, bad, message):
    path = write(tmp_path / "m.txt", f"{MNRE_LINE}\n{bad}\n")
    with pytest.raises(DataFormatError) as info:
        list(load_mnre(path))
    assert str(info.value).startswith(f"{path}:2: ") and message in str(info.value)


# --- captions, knowledge, example pools --------------------------------------------------------


def test_caption_readers(tmp_path):
    blip = write(tmp_path / "b.txt", "108911.jpg :the bears play\n16_05_01_1.jpg :a man : smiling\n")
    assert dict(iter_blip2_captions(blip)) == {"108911": "the bears play", "16_05_01_1": "a man : smiling"}
    owl = write(tmp_path / "o.txt", "imgid:71044###A greenhouse.\n\nWith benches.\nimgid:O_2371###People.\n", crlf=True)
    assert dict(iter_owl_captions(owl)) == {"71044": "A greenhouse.\n\nWith benches.", "O_2371": "People."}
    with pytest.raises(DataFormatError, match=r"b2\.txt:2: expected '<id>\.jpg :<caption>'"):
        list(iter_blip2_captions(write(tmp_path / "b2.txt", "1.jpg :ok\nno separator here\n")))


def pgim_zip(tmp_path, blocks):
    text = "".join("".join(f"{t}\tO\r\n" for t in toks) + "<EOS>\tX\r\n" + "".join(f"{k}\tX\r\n" for k in know.split()) + "\r\n"
                   for toks, know in blocks)
    path = tmp_path / "k.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("test.txt", text)
    return path


def test_pgim_knowledge_aligns_by_tokens_not_position(tmp_path):
    # tweet "b c" is missing from the zip (like the 2015 zip's last tweets); "a" appears twice.
    archive = pgim_zip(tmp_path, [(["a"], "first a"), (["d"], "about d"), (["a"], "second a")])
    items = list(iter_pgim_knowledge(archive, "test.txt"))
    assert [(i.tokens, i.knowledge) for i in items][1] == (("d",), "about d")
    index = KnowledgeIndex(items)
    assert [index.take(t) for t in (["a"], ["b", "c"], ["d"], ["a"])] == ["first a", None, "about d", "second a"]


def test_pgim_knowledge_block_without_eos(tmp_path):
    path = tmp_path / "k.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("test.txt", "a\tO\r\nb\tO\r\n\r\n")
    with pytest.raises(DataFormatError, match=r"k\.zip!test\.txt:1: block has no <EOS> line"):
        list(iter_pgim_knowledge(path, "test.txt"))


def test_example_pool_quirks(tmp_path):
    answers = write(tmp_path / "a.txt", "1\nNamed entities:1. Harry\n2\nNamed entities: none\n", crlf=True)
    labels = write(
        tmp_path / "l.txt",
        "1\n['Harry Potter and the Sorcerer's Stone', 'MISC'], ['J.K. Rowling', 'PER']\n2\nNone\n3\n['x', 'PER']",
        crlf=True,
    )
    first, second = load_pgim_examples(answers, labels)
    assert first.labels == [("Harry Potter and the Sorcerer's Stone", "MISC"), ("J.K. Rowling", "PER")]
    assert second.labels == [] and second.answer == "Named entities: none"
    bad = write(tmp_path / "bad.txt", "1\n['a', 'PER'], oops(\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2: labels are not a Python literal"):
        list(load_pgim_examples(answers, bad))


# --- data root and registry --------------------------------------------------------------------


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("MMIE_DATA_ROOT", str(tmp_path))
    root = resolve_data_root()
    assert root.path == tmp_path.resolve() and root.how == "$MMIE_DATA_ROOT"
    assert resolve_data_root(tmp_path).how == "--data-root"
    with pytest.raises(DataRootNotFound, match="--data-root"):
        resolve_data_root(tmp_path / "nope")
    monkeypatch.setenv("MMIE_DATA_ROOT", str(tmp_path / "nope"))
    with pytest.raises(DataRootNotFound, match="MMIE_DATA_ROOT"):
        resolve_data_root()


def test_load_split_with_a_synthetic_root(tmp_path):
    (tmp_path / "twitter2017").mkdir()
    write(tmp_path / "twitter2017" / "valid.txt", CONLL)
    (tmp_path / "captions").mkdir()
    write(tmp_path / "captions" / "blip2_twitter2017.txt", "1.jpg :a man\n")
    records = list(load_split("twitter2017", "dev", data_root=tmp_path, captions="blip2"))
    assert [r.caption for r in records] == ["a man", None]
    assert records[0].meta["split"] == "valid"
    with pytest.raises(ValueError, match="no split 'nope'"):
        load_split("twitter2017", "nope", data_root=tmp_path)
    with pytest.raises(ValueError, match="no 'pgim' knowledge for mnre"):
        load_split("mnre", "test", data_root=tmp_path, knowledge="pgim")


def test_convert_command_output_validates(tmp_path, capsys):
    (tmp_path / "twitter2015").mkdir()
    write(tmp_path / "twitter2015" / "test.txt", CONLL)
    out = tmp_path / "o.jsonl"
    code = main(["data", "convert", "twitter2015", "--split", "test", "--data-root", str(tmp_path), "-o", str(out), "--limit", "1"])
    assert code == 0
    (line,) = out.read_text().splitlines()
    data = json.loads(line)
    assert data["image"] is None and data["meta"]["image_id"] == "1.jpg" and "caption" not in data
    Record.model_validate(data)
    write(tmp_path / "twitter2015" / "test.txt", CONLL.replace("shot\tO", "shot\tX"))
    assert main(["data", "convert", "twitter2015", "--split", "test", "--data-root", str(tmp_path), "-o", str(out)]) == 2
    assert "test.txt:4: unknown tag 'X'" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl.partial").exists()
