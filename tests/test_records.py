import pytest
from pydantic import ValidationError

from mmie_pipe.records import Box, Entity, Gold, Post, Record, find_span


def test_entity_offsets_must_match_text_length():
    Entity(text="Paris", start=3, end=8, type="LOC")
    with pytest.raises(ValidationError, match="length"):
        Entity(text="Paris", start=3, end=9, type="LOC")
    with pytest.raises(ValidationError, match="end"):
        Entity(text="x", start=4, end=4, type="LOC")


def test_box_rejects_reversed_corners_and_names_field():
    with pytest.raises(ValidationError, match="out of order"):
        Box(xmin=10, ymin=0, xmax=5, ymax=3)
    with pytest.raises(ValidationError) as info:
        Box(xmin=-1, ymin=0, xmax=5, ymax=3)
    assert "xmin" in str(info.value)


def test_iou():
    a = Box(xmin=0, ymin=0, xmax=10, ymax=10)
    assert a.iou(a) == 1.0
    assert a.iou(Box(xmin=10, ymin=10, xmax=20, ymax=20)) == 0.0
    assert a.iou(Box(xmin=0, ymin=0, xmax=10, ymax=5)) == pytest.approx(0.5)


def test_post_rejects_unknown_and_wrong_types_with_field_names():
    with pytest.raises(ValidationError, match="captoin"):
        Post(id="1", text="hi", captoin="x")
    with pytest.raises(ValidationError, match="tokens"):
        Post(id="1", text="hi", tokens="not a list")
    with pytest.raises(ValidationError, match="text"):
        Post(id="1", text="")
    assert Post(id=17, text="hi").id == "17"


def test_gold_offsets_are_checked_against_text():
    ent = Entity(text="Rome", start=0, end=4, type="LOC")
    Post(id="1", text="Rome is hot", gold=Gold(entities=[ent]))
    with pytest.raises(ValidationError, match=r"gold.entities\[0\]"):
        Post(id="1", text="Oslo is cold", gold=Gold(entities=[ent]))


def test_record_roundtrip_json():
    rec = Record(id="1", text="Rome is hot", entities=[Entity(text="Rome", start=0, end=4, type="LOC")])
    again = Record.model_validate_json(rec.model_dump_json())
    assert again == rec and again.ok


def test_find_span_prefers_untaken_occurrence_and_falls_back_to_case():
    text = "Paris and paris and Paris"
    assert find_span(text, "Paris") == (0, 5)
    assert find_span(text, "Paris", {(0, 5)}) == (20, 25)
    assert find_span("I love NYC", "nyc") == (7, 10)
    assert find_span("I love NYC", "LA") is None
