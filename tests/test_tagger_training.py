"""Training a tiny random-weight BERT + CRF on a handful of real tweets (with PGIM knowledge):
loss goes down, checkpoints round-trip, decoding is well-formed and confined to the post."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("torchcrf")

from mmie_pipe.data import DataRootNotFound, load_split  # noqa: E402
from mmie_pipe.records import Entity, Gold, Record  # noqa: E402
from mmie_pipe.train.alignment import post_tokens  # noqa: E402
from mmie_pipe.train.checkpoint import load_tagger, save_tagger  # noqa: E402
from mmie_pipe.train.data import DataSource  # noqa: E402
from mmie_pipe.train.encoding import InputEncoder, collate  # noqa: E402
from mmie_pipe.train.evaluation import score_tagger  # noqa: E402
from mmie_pipe.train.predictor import Predictor  # noqa: E402
from mmie_pipe.train.tiny_encoder import save_tiny_encoder  # noqa: E402
from mmie_pipe.train.trainer import TrainSettings, train_tagger  # noqa: E402

N_TWEETS = 24


@pytest.fixture(scope="module")
def tweets() -> list[Record]:
    try:
        records = list(load_split("twitter2017", "train", knowledge="pgim", limit=N_TWEETS))
    except DataRootNotFound:
        pytest.skip("benchmark data not found (../shared/data)")
    assert sum(r.knowledge is not None for r in records) > N_TWEETS // 2
    return records


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory, tweets):
    texts = [r.text + " " + (r.knowledge or "") for r in tweets]
    return str(save_tiny_encoder(tmp_path_factory.mktemp("encoder"), texts))


def write_jsonl(path, records):
    path.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
    return str(path)


def settings(encoder: str, **overrides) -> TrainSettings:
    base = dict(
        encoder=encoder, context_fields=["knowledge"], max_length=48, epochs=6, batch_size=4,
        lr_encoder=2e-3, lr_head=3e-2, warmup_ratio=0.0, patience=None, threads=1, dropout=0.0,
    )
    return TrainSettings(**{**base, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tweets, tiny_encoder):
    folder = tmp_path_factory.mktemp("run")
    data = write_jsonl(folder / "train.jsonl", tweets)
    out = folder / "out"
    manifest = train_tagger(
        settings(tiny_encoder), DataSource(data), out, dev=DataSource(data), test=DataSource(data), progress=False
    )
    return manifest, out


def test_loss_decreases_and_manifest_is_complete(trained):
    manifest, out = trained
    losses = [h["train_loss"] for h in manifest["training"]["history"]]
    assert len(losses) == 6
    assert losses[-1] < 0.7 * losses[0], losses
    for key in ("tagger", "settings", "data", "seed", "versions", "scores", "seconds", "memory"):
        assert key in manifest
    assert manifest["memory"]["peak_rss_mib"] > 0
    assert manifest["data"]["train_encoding"]["with_context"] > 0
    saved = json.loads((out / "best" / "manifest.json").read_text())
    assert saved["scores"] == manifest["scores"]
    assert json.loads((out / "best" / "labels.json").read_text())["coarse"][0] == "O"


def test_saved_model_reproduces_its_scores_and_round_trips(trained, tweets, tmp_path):
    manifest, out = trained
    loaded = load_tagger(out / "best")
    predictor = Predictor(loaded, batch_size=5)
    assert score_tagger(predictor, tweets) == manifest["scores"]["test"]
    first = predictor.predict_records(tweets)
    assert sum(len(e) for e in first) > 0, "the trained tiny model should find some entities"
    again = Predictor(load_tagger(save_tagger(loaded, tmp_path / "copy")), batch_size=7).predict_records(tweets)
    assert [[e.model_dump() for e in row] for row in first] == [[e.model_dump() for e in row] for row in again]


def test_predictions_are_valid_bio_inside_the_post_with_type_distributions(trained, tweets):
    import torch

    _, out = trained
    tagger = load_tagger(out / "best")
    predictor = Predictor(tagger)
    tags = tagger.config.tag_sets()["coarse"]
    requests = [predictor.request(r) for r in tweets]
    encoded = [predictor.encode(r) for r in requests]
    batch = collate(encoded, tagger.tokenizer.pad_token_id)
    with torch.inference_mode():
        paths = tagger.model.decode(tagger.model.emissions(batch), batch["word_mask"])["coarse"]
    for request, path in zip(requests, paths):
        # One tag per post word: the knowledge after the post is never tagged.
        assert len(path) == len(request.tokens.words)
        assert tags.is_valid([tags.tags[t] for t in path])
    for record, entities in zip(tweets, predictor.predict_records(tweets)):
        for entity in entities:
            assert entity.end <= len(record.text) and record.text[entity.start : entity.end] == entity.text
            assert sum(entity.type_probs.values()) == pytest.approx(1.0)
            assert max(entity.type_probs, key=entity.type_probs.get) == entity.type
            assert set(entity.type_probs) == set(tagger.config.types)


def test_knowledge_is_context_only(trained, tweets):
    """A post followed by knowledge full of entity-like words: entities come from the post alone."""
    _, out = trained
    predictor = Predictor(load_tagger(out / "best"))
    source = next(r for r in tweets if r.knowledge)
    record = source.model_copy(update={"knowledge": " ".join([source.text] * 3 + [source.knowledge])})
    for entity in predictor.predict_records([record])[0]:
        assert entity.end <= len(record.text)


def test_truncation_cuts_knowledge_never_the_post(tiny_encoder, tweets):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    record = max(tweets, key=lambda r: len(r.tokens))
    words = post_tokens(record).words
    alone = InputEncoder(tokenizer, max_length=256).encode(words, [])
    budget = len(alone.input_ids) + 10  # room for a little of the knowledge only
    encoder = InputEncoder(tokenizer, max_length=budget)
    with_knowledge = encoder.encode(words, encoder.context_words([record.knowledge, record.knowledge]))
    assert len(with_knowledge.input_ids) == budget
    assert 0 < with_knowledge.context_words_kept < with_knowledge.context_words_total
    post_ids = alone.input_ids[1:-1]  # without [CLS] / [SEP]
    assert with_knowledge.input_ids[1 : 1 + len(post_ids)] == post_ids
    assert with_knowledge.word_starts == alone.word_starts
    # A post longer than max_length: the context goes, the post stays whole.
    squeezed = InputEncoder(tokenizer, max_length=8).encode(words, ["more", "knowledge"])
    assert squeezed.context_words_kept == 0 and squeezed.input_ids == alone.input_ids


def test_resume_continues_where_it_stopped(tmp_path, tweets, tiny_encoder):
    data = DataSource(write_jsonl(tmp_path / "train.jsonl", tweets[:12]))
    out = tmp_path / "out"
    first = train_tagger(settings(tiny_encoder, epochs=1), data, out, dev=data, progress=False)
    assert first["training"]["epochs_run"] == 1
    resumed = train_tagger(settings(tiny_encoder, epochs=2), data, out, dev=data, resume=True, progress=False)
    assert resumed["training"]["epochs_run"] == 2
    assert resumed["training"]["steps"] == 2 * first["training"]["steps"]
    assert [h["epoch"] for h in resumed["training"]["history"]] == [1, 2]
    with pytest.raises(Exception, match="settings differ"):
        train_tagger(settings(tiny_encoder, epochs=3, lr_head=0.5), data, out, resume=True, progress=False)


def test_gem_mode_predicts_fine_and_coarse_types(tmp_path, tweets, tiny_encoder):
    """Synthetic fine types (`PER.a`/`PER.b`, ...) stand in for FMNERG's 51."""

    def with_fine(record: Record) -> Record:
        entities = [
            Entity(**{**e.model_dump(), "fine_type": f"{e.type}.{'ab'[len(e.text) % 2]}"}) for e in record.gold.entities
        ]
        return record.model_copy(update={"gold": Gold(entities=entities)})

    records = [with_fine(r) for r in tweets]
    data = DataSource(write_jsonl(tmp_path / "fine.jsonl", records))
    manifest = train_tagger(settings(tiny_encoder, gem=True, epochs=2), data, tmp_path / "gem", dev=data, progress=False)
    assert set(manifest["scores"]["dev"]) == {"type", "fine_type"}
    tagger = load_tagger(tmp_path / "gem" / "best")
    assert tagger.config.fine_to_coarse["PER.a"] == "PER"
    predictor = Predictor(tagger)
    for entities in predictor.predict_records(records):
        for entity in entities:
            assert entity.fine_type in tagger.config.fine_types
            assert entity.type == tagger.config.fine_to_coarse[entity.fine_type]
            assert set(entity.type_probs) == set(tagger.config.fine_types)
            assert max(entity.type_probs, key=entity.type_probs.get) == entity.fine_type


def test_cli_train_tagger(monkeypatch, tmp_path, tweets, tiny_encoder, capsys):
    """`mmie-pipe train tagger` through the real CLI entry (with `train` among the commands)."""
    from mmie_pipe import cli

    if "train" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "train"))
    data = write_jsonl(tmp_path / "train.jsonl", tweets[:8])
    argv = ["train", "tagger", "--train", data, "--dev", data, "--encoder", tiny_encoder, "--context", "knowledge",
            "--epochs", "1", "--batch-size", "4", "--max-length", "48", "--threads", "1", "--no-progress",
            "--output", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["best_epoch"] == 1 and "type" in summary["scores"]["dev"]
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert cli.main(argv) == 1  # the run exists: --resume or --overwrite is required
