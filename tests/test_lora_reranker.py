"""`mmie-pipe finetune reranker`: the question builder, and LoRA training of a tiny random-weight
LLaVA on CPU (loss goes down; the adapter saves, reloads, changes outputs and the cache key)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from mmie_pipe.data.hierarchy import load_hierarchy
from mmie_pipe.records import Entity, Gold, Record
from mmie_pipe.reranking import question_request
from mmie_pipe.train.rerank_data import build_examples, predicted_distributions

TYPES = ["PER", "LOC", "ORG", "MISC"]
NAMES = ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel"]


def gold_record(i: int, image: str | None = None) -> Record:
    a, b = NAMES[i % len(NAMES)], NAMES[(i + 3) % len(NAMES)]
    text = f"{a} met {b} today"
    ents = [Entity(text=a, start=0, end=len(a), type=TYPES[i % 4]),
            Entity(text=b, start=len(a) + 5, end=len(a) + 5 + len(b), type=TYPES[(i + 1) % 4])]
    return Record(id=f"r{i}", text=text, image=image, caption="people on a street", gold=Gold(entities=ents))


def test_answer_positions_are_balanced():
    examples, stats = build_examples([gold_record(i) for i in range(20)], top_k=5, types=TYPES, seed=3)
    assert stats.examples == 40 and all(len(e.question.options) == 4 for e in examples)  # K > label set: all 4
    assert Counter(e.answer for e in examples) == {"A": 10, "B": 10, "C": 10, "D": 10}
    for e in examples:
        assert e.question.type_of(e.answer) == e.gold


def test_the_answer_never_enters_the_prompt():
    # the same post and entity with different gold types: with the same option order, the
    # request is byte-for-byte the same, so nothing in it can tell the answer
    text = "Alpha met Bravo today"
    records = [Record(id=f"r{i}", text=text, gold=Gold(entities=[Entity(text="Alpha", start=0, end=5, type=t)]))
               for i, t in enumerate(["PER", "ORG"])]
    examples, _ = build_examples(records, top_k=2, types=["PER", "ORG"], seed=0)
    first, second = examples
    assert first.question.options == second.question.options and first.answer != second.answer
    assert question_request(first.question) == question_request(second.question)
    body = question_request(first.question).messages[0].content
    assert not body.rstrip().endswith((first.answer, second.answer))


def test_confusables_come_from_predictions_and_fine_options_from_the_coarse_type():
    hierarchy = load_hierarchy("fmnerg")
    text = "Alpha met Bravo today"
    gold = Record(id="r0", text=text, gold=Gold(entities=[Entity(text="Alpha", start=0, end=5, type="person", fine_type="athlete")]))
    predicted = Record(id="r0", text=text, entities=[Entity(text="Alpha", start=0, end=5, type="person", fine_type="actor",
                       type_probs={"actor": 0.5, "city": 0.3, "athlete": 0.1, "coach": 0.06, "author": 0.04})])
    examples, stats = build_examples([gold], granularity="fine", top_k=3, hierarchy=hierarchy,
                                     distributions=predicted_distributions([predicted]))
    (example,) = examples
    assert set(example.question.options) == {"athlete", "actor", "coach"}  # city is not a person type
    assert stats.confusables_from_predictions == 1


# -- training ---------------------------------------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    from tiny_models import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "street.jpg"
    Image.new("RGB", (64, 48), (200, 120, 30)).save(path)
    return path


def settings(base, **extra):
    from mmie_pipe.train.lora import LoraSettings

    return LoraSettings(base_model=str(base), family="llava", rank=8, alpha=16, dropout=0.0, batch_size=4,
                        lr=5e-3, warmup_ratio=0.0, device="cpu", **extra)


@pytest.fixture(scope="module")
def trained(tiny_llava, picture, tmp_path_factory):
    from mmie_pipe.train.lora import train_reranker

    records = [gold_record(i, str(picture)) for i in range(4)]
    examples, _ = build_examples(records, top_k=3, types=TYPES, context="image", seed=0)
    out = tmp_path_factory.mktemp("lora-run")
    manifest = train_reranker(settings(tiny_llava, max_steps=12, checkpoint_steps=4), examples, {"dev": examples[:4]},
                              out, progress=False)
    return out, manifest, examples


def test_lora_training_lowers_the_loss_and_saves(trained, tiny_llava):
    out, manifest, _ = trained
    losses = manifest["losses"]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    targets = config["target_modules"]
    assert "language_model" in (targets if isinstance(targets, str) else " ".join(targets))  # the LM only
    reranker = json.loads((out / "adapter" / "reranker.json").read_text())
    assert reranker["template"] == "rerank.choice.v1.jinja" and len(reranker["template_sha256"]) == 64
    assert manifest["base_model"]["sha256"] and manifest["adapter"]["sha256"]
    assert manifest["metrics"]["dev_accuracy_after"] >= 0 and "dev_accuracy_before" in manifest["metrics"]
    assert manifest["seed"] == 0 and manifest["settings"]["rank"] == 8


def test_adapter_reloads_changes_outputs_and_the_cache_key(trained, tiny_llava, tmp_path):
    import shutil

    from mmie_pipe.adapters.transformers_backend import TransformersBackend, TransformersConfig
    from mmie_pipe.cache import GenerationCache
    from mmie_pipe.calls import ModelClient

    out, _, examples = trained
    backend = TransformersBackend(TransformersConfig(model=str(tiny_llava), family="llava", device="cpu",
                                                     lora_modules={"gem": str(out / "adapter")}))
    client = ModelClient(backend, GenerationCache(tmp_path / "c.sqlite"), stage="rerank", stage_version=1)
    question = examples[0].question

    async def both():
        await backend.start()
        base = await client.choose(question_request(question), question.letters)
        tuned = await client.choose(question_request(question, lora="gem"), question.letters)
        return base, tuned

    base, tuned = asyncio.run(both())
    assert base.choice.probs != pytest.approx(tuned.choice.probs, abs=1e-4)  # the adapter changes the distribution
    key = client.key(question_request(question, lora="gem"))
    assert key != client.key(question_request(question))

    # a retrained adapter of exactly the same size gets a new identity, so it misses the cache
    retrained = tmp_path / "retrained"
    shutil.copytree(out / "adapter", retrained)
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(retrained / "adapter_model.safetensors", "pt") as handle:
        metadata = handle.metadata()
        weights = {k: handle.get_tensor(k) * 1.5 for k in handle.keys()}
    save_file(weights, retrained / "adapter_model.safetensors", metadata=metadata)
    other = TransformersBackend(TransformersConfig(model=str(tiny_llava), family="llava", device="cpu",
                                                   lora_modules={"gem": str(retrained)}))
    assert (retrained / "adapter_model.safetensors").stat().st_size == (out / "adapter" / "adapter_model.safetensors").stat().st_size
    other_client = ModelClient(other, GenerationCache(tmp_path / "c.sqlite"), stage="rerank", stage_version=1)
    assert other_client.key(question_request(question, lora="gem")) != key


def test_untrained_adapter_is_refused(tiny_llava, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    from mmie_pipe.adapters.transformers_backend import TransformersBackend, TransformersConfig
    from mmie_pipe.errors import ModelCallError

    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "zero")
    backend = TransformersBackend(TransformersConfig(model=str(tiny_llava), family="llava", device="cpu",
                                                     lora_modules={"zero": str(tmp_path / "zero")}))
    with pytest.raises(ModelCallError, match="does not change the model's outputs"):
        backend.load()


def test_training_resumes_from_its_checkpoint(trained, tiny_llava, tmp_path):
    import shutil

    from mmie_pipe.train.lora import train_reranker

    out, first, examples = trained
    copy = tmp_path / "resume"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "adapter")
    resumed = train_reranker(settings(tiny_llava, max_steps=16, checkpoint_steps=4), examples, {}, copy,
                             resume=True, progress=False)
    assert resumed["losses"][:12] == first["losses"] and len(resumed["losses"]) == 16


def test_qlora_needs_a_gpu(tiny_llava, tmp_path):
    from mmie_pipe.errors import ConfigError
    from mmie_pipe.train.lora import train_reranker

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        train_reranker(settings(tiny_llava, load_in_4bit=True, max_steps=1), [object()], {}, tmp_path / "q", progress=False)
