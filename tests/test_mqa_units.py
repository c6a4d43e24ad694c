"""MQA building blocks: mention parsing, offset recovery, option layout, choice reading,
relation tables. No model needed."""

import math

import pytest

from mmie_pipe.data import load_split
from mmie_pipe.model_io import ModelResponse
from mmie_pipe.stages.mqa import locate_mentions, occurrences, parse_mentions
from mmie_pipe.stages.multiple_choice import lay_out, read_choice, without_none
from mmie_pipe.stages.relations import load_relation_table


def spans_of(text, mentions, **kw):
    return [text[s:e] + f"@{s}" for s, e in locate_mentions(text, mentions, **kw)]


def test_parse_mentions():
    assert parse_mentions(" Taylor Swift, Nashville\nText: more") == ["Taylor Swift", "Nashville"]
    assert parse_mentions("none") == [] and parse_mentions("None.") == [] and parse_mentions("") == []
    assert parse_mentions('"Apple", Apple ; iPhone (product)') == ["Apple", "iPhone"]


def test_repeated_mentions_are_all_recovered():
    text = "Messi passes to Suarez , Messi scores , messi celebrates"
    assert spans_of(text, ["Messi"]) == ["Messi@0", "Messi@25"]  # exact matches win over case-folded
    assert spans_of(text, ["MESSI"]) == ["Messi@0", "Messi@25", "messi@40"]


def test_punctuation_and_quotes_around_mentions():
    text = "Back in the U.S. with Dr. Dre !"
    assert spans_of(text, ["U.S.", "Dr. Dre."]) == ["U.S.@12", "Dr. Dre@22"]
    assert spans_of("Off to Paris.", ['"Paris."']) == ["Paris@7"]


def test_hashtags_and_handles_keep_the_datasets_convention():
    raw = "RT @NASA : #Apollo11 launched 50 years ago"
    assert spans_of(raw, ["@NASA", "#Apollo11"]) == ["NASA@4", "Apollo11@12"]
    assert spans_of(raw, ["@NASA"], strip_sigils=False) == ["@NASA@3"]
    tokenized = "RT @ NASA : # Apollo11 launched"  # Twitter-2015/2017 token spacing
    assert spans_of(tokenized, ["#Apollo11", "@NASA"]) == ["NASA@5", "Apollo11@14"]


def test_unicode_and_word_edges():
    text = "Café de Flore à Paris 🇫🇷 avec Zoë"
    assert spans_of(text, ["café de flore", "Zoë", "Paris 🇫🇷"]) == ["Café de Flore@0", "Paris 🇫🇷@16", "Zoë@30"]
    assert occurrences("Pineapple and Apple", "Apple") == [(14, 19)]  # never inside a word
    assert spans_of("I love NYC", ["Berlin", "love NYC yes"]) == []  # not in the text: dropped


def test_nested_spans_are_dropped():
    text = "New York City Marathon in New York"
    assert spans_of(text, ["New York", "New York City Marathon", "York"]) == ["New York City Marathon@0", "New York@26"]


def test_option_layout_lettering_and_none_position():
    items = [("PER", "x is a person entity"), ("LOC", "x is a location entity")]
    last = lay_out(items, ("none", "none of the above"), "upper", "last")
    assert last.lines == ["A. x is a person entity", "B. x is a location entity", "C. none of the above"]
    first = lay_out(items, ("none", "none of the above"), "lower", "first")
    assert first.letters == ("a", "b", "c") and first.keys == ("none", "PER", "LOC")
    assert lay_out(items, None, "digits").letters == ("1", "2")
    with pytest.raises(ValueError):
        lay_out([(str(i), "s") for i in range(20)], ("none", "n"), "upper")


def _response(text, probs, unseen=()):
    from mmie_pipe.model_io import ChoiceScores

    return ModelResponse(text=text, choice=ChoiceScores(probs=probs, other_mass=0.1, method="first_token", unseen=list(unseen)))


def test_read_choice_sums_verbalisations_and_falls_back_to_none():
    options = lay_out([("lives", "a"), ("born", "b"), ("lives", "c")], ("None", "n"), "upper")
    reading = read_choice(_response("B", {"A": 0.3, "B": 0.35, "C": 0.25, "D": 0.1}), options)
    assert reading.usable and reading.chosen == "lives" and math.isclose(reading.probs["lives"], 0.55)
    assert math.isclose(sum(reading.probs.values()), 1.0)
    for bad in (ModelResponse(text="B"), _response("Z", {"A": 1.0, "B": 0, "C": 0, "D": 0}),
                _response("A", {"A": 0.0, "B": 0.0, "C": 0.0, "D": 0.0}, unseen="ABCD")):
        fallback = read_choice(bad, options)
        assert not fallback.usable and fallback.chosen == "None" and fallback.probs["None"] == 1.0
    type_probs, none_prob = without_none({"PER": 0.6, "LOC": 0.2, "none": 0.2}, "none")
    assert math.isclose(none_prob, 0.2) and math.isclose(type_probs["PER"], 0.75) and math.isclose(sum(type_probs.values()), 1)


def test_mnre_table_covers_every_label(shared_data):
    table = load_relation_table("mnre.v1")
    gold_labels = {r.label for split in ("train", "val", "test") for rec in load_split("mnre", split, shared_data) for r in rec.gold.relations}
    assert len(gold_labels) == 23 and gold_labels == set(table.labels)
    for pair in table.pairs():
        options = table.options_for(pair)
        assert options and len(options) + 1 <= 20  # fits the first token's top log-probabilities
    assert {label for pair in table.pairs() for label, _ in table.options_for(pair)} == set(table.labels) - {"None"}
    assert len(table.options_for(("per", "loc"))) > len({label for label, _ in table.options_for(("per", "loc"))})


def test_bad_relation_table_is_a_config_error(tmp_path):
    from mmie_pipe.errors import ConfigError

    bad = tmp_path / "t.yaml"
    bad.write_text("types: {a: an a}\nno_relation: {label: None, say: none}\nrelations:\n  r: {pair: [a, b], say: ['{head} r {tail}']}\n")
    with pytest.raises(ConfigError, match="undeclared type"):
        load_relation_table(str(bad))
