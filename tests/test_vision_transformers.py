"""The transformers caption path end to end on CPU, with tiny random-weight BLIP-2 (OPT and Flan-T5
language models) and LLaVA models built from configs here, a word-level tokenizer trained here and
the real BLIP / CLIP image processors, saved to a directory and loaded like a user's local weights."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from PIL import Image  # noqa: E402

import tiny_vision_models  # noqa: E402
from tiny_vision_models import BOS, EOS, IMAGE, LLAVA_TEMPLATE, PAD, SPECIALS, VISION  # noqa: E402

from mmie_pipe.adapters.transformers_backend import TransformersBackend, TransformersConfig  # noqa: E402
from mmie_pipe.cache import GenerationCache  # noqa: E402
from mmie_pipe.calls import ModelClient  # noqa: E402
from mmie_pipe.model_io import ImagePart, Message, ModelRequest, Sampling, TextPart  # noqa: E402
from mmie_pipe.records import Record  # noqa: E402
from mmie_pipe.stages.base import StageContext  # noqa: E402
from mmie_pipe.stages.vision import CaptionParams, CaptionStage  # noqa: E402

WORDS = "a photo of the cat dog man woman person sitting on street with sky red blue green house car".split()


def word_tokenizer(**extra):
    return tiny_vision_models.word_tokenizer(WORDS, **extra)


def only_words(model) -> None:
    """Random weights: zero the output rows of special tokens so greedy decoding emits words and the
    answers are non-empty strings (the rows are tied to the input embeddings, which is harmless)."""
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight[: len(SPECIALS)] = 0.0


def build_blip2(directory: Path, text: str) -> Path:
    vocab = len(SPECIALS) + len(WORDS)
    if text == "opt":
        text_config = dict(model_type="opt", vocab_size=vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                           num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=64,
                           bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    else:
        text_config = dict(model_type="t5", vocab_size=vocab, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2,
                           decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS)
    config = transformers.Blip2Config(
        vision_config=VISION,
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            encoder_hidden_size=32, vocab_size=vocab),
        text_config=text_config, num_query_tokens=4, image_token_index=IMAGE,
    )
    torch.manual_seed(0)
    model = transformers.Blip2ForConditionalGeneration(config).eval()
    only_words(model)
    processor = transformers.Blip2Processor(
        transformers.BlipImageProcessor(size={"height": 32, "width": 32}), word_tokenizer(), num_query_tokens=4
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def build_llava(directory: Path, chat_template: str | None = LLAVA_TEMPLATE) -> Path:
    vocab = len(SPECIALS) + len(WORDS)
    config = transformers.LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", projection_dim=32, **{**VISION, "num_hidden_layers": 2}),
        text_config=dict(model_type="llama", vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD),
        image_token_index=IMAGE, vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration(config).eval()
    only_words(model)
    processor = transformers.LlavaProcessor(
        image_processor=transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=word_tokenizer(extra_special_tokens={"image_token": "<image>"}),
        patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=chat_template,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return {
        "blip2-opt": ("blip2", build_blip2(root / "blip2-opt", "opt")),
        "blip2-t5": ("blip2", build_blip2(root / "blip2-t5", "t5")),
        "llava": ("llava", build_llava(root / "llava")),
        "llava-no-template": ("llava", build_llava(root / "llava-plain", chat_template=None)),
    }


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "street.jpg"
    Image.new("RGB", (64, 48), (30, 120, 200)).save(path)
    return path


def backend_for(model_dirs, name) -> TransformersBackend:
    family, directory = model_dirs[name]
    return TransformersBackend(TransformersConfig(model=str(directory), family=family, device="cpu"))


@pytest.mark.parametrize("name", ["blip2-opt", "blip2-t5", "llava", "llava-no-template"])
def test_caption_stage_through_local_weights(model_dirs, picture, tmp_path, name):
    backend = backend_for(model_dirs, name)
    template = "blip2" if name.startswith("blip2") else "short"
    model = ModelClient(backend, GenerationCache(tmp_path / "c.sqlite"), stage="caption", stage_version=1)
    stage = CaptionStage(CaptionParams(template=template, max_tokens=6), model, StageContext(run_dir=tmp_path))

    async def go():
        await backend.start()
        await stage.setup()
        record = Record(id="1", text="t", image=str(picture))
        await stage.process(record)
        return record

    record = asyncio.run(go())
    words = record.caption.split()
    assert 1 <= len(words) <= 6 and set(words) <= set(WORDS), record.caption
    assert record.provenance["caption"] == f"model:transformers:{model_dirs[name][1]}"
    assert backend.identity()["family"] == model_dirs[name][0]


def answer_and_reference(backend: TransformersBackend, request: ModelRequest):
    """The backend's answer and what decoding the model's own `generate` output gives."""
    from mmie_pipe.adapters.transformers_vision import vision_inputs

    response = backend._generate_sync(request)
    inputs = vision_inputs(backend, request)
    with torch.no_grad():
        out = backend.model.generate(**inputs, max_new_tokens=request.sampling.max_tokens, do_sample=False, pad_token_id=PAD)
    return response, inputs, out[0]


def request_for(picture: Path, text: str, max_tokens: int = 5) -> ModelRequest:
    return ModelRequest(
        messages=(Message(role="user", content=(ImagePart.from_path(picture), TextPart(text=text))),),
        sampling=Sampling(max_tokens=max_tokens),
    )


def test_blip2_decoder_only_output_starts_after_the_prompt(model_dirs, picture):
    backend = backend_for(model_dirs, "blip2-opt")
    backend.load()
    response, inputs, sequence = answer_and_reference(backend, request_for(picture, "a photo of"))
    prompt_len = inputs["input_ids"].shape[-1]
    assert prompt_len == 4 + 3  # 4 query-token placeholders + "a photo of"
    assert sequence[:prompt_len].tolist() == inputs["input_ids"][0].tolist()  # OPT echoes the prompt
    assert response.text == backend.tokenizer.decode(sequence[prompt_len:], skip_special_tokens=True) != ""
    assert response.usage.completion_tokens == 5


def test_blip2_encoder_decoder_output_is_not_cut_by_prompt_length(model_dirs, picture):
    backend = backend_for(model_dirs, "blip2-t5")
    backend.load()
    response, inputs, sequence = answer_and_reference(backend, request_for(picture, "a photo of"))
    assert int(sequence[0]) == PAD  # Flan-T5 output: decoder start token, then the answer only
    assert len(sequence) < inputs["input_ids"].shape[-1] + 1  # slicing at the prompt length would leave nothing
    assert response.text == backend.tokenizer.decode(sequence[1:], skip_special_tokens=True) != ""
    assert response.usage.completion_tokens == 5


def test_llava_prompt_uses_the_chat_template_and_expands_the_image(model_dirs, picture):
    from mmie_pipe.adapters.transformers_vision import _chat_prompt

    backend = backend_for(model_dirs, "llava")
    backend.load()
    request = request_for(picture, "a photo of")
    assert _chat_prompt(backend.processor, request) == "USER: <image>\na photo of ASSISTANT:"
    response, inputs, sequence = answer_and_reference(backend, request)
    assert int((inputs["input_ids"] == IMAGE).sum()) == 16  # (32 / 8) ** 2 patches
    assert response.text == backend.tokenizer.decode(sequence[inputs["input_ids"].shape[-1]:], skip_special_tokens=True) != ""

    plain = backend_for(model_dirs, "llava-no-template")
    plain.load()
    assert _chat_prompt(plain.processor, request) == "USER: <image>\na photo of ASSISTANT:"


def test_blip2_refuses_two_images(model_dirs, picture):
    from mmie_pipe.adapters.transformers_vision import vision_inputs

    backend = backend_for(model_dirs, "blip2-opt")
    backend.load()
    part = ImagePart.from_path(picture)
    request = ModelRequest(messages=(Message(role="user", content=(part, part, TextPart(text="x"))),))
    with pytest.raises(ValueError, match="exactly one image"):
        vision_inputs(backend, request)


def test_unknown_family_is_a_config_error(model_dirs):
    from mmie_pipe.adapters.transformers_vision import VISION_FAMILIES, load_vision_model
    from mmie_pipe.errors import ConfigError

    assert {"blip2", "llava"} <= set(VISION_FAMILIES)
    with pytest.raises(ConfigError, match="unknown transformers model family 'owl'"):
        load_vision_model("owl", str(model_dirs["llava"][1]), {})


def test_zero_shot_detector_adapter_loads_local_owlv2(tmp_path):
    """The open-vocabulary detector plugs in through the same adapter interface (tiny random OWLv2;
    its boxes are meaningless, so this checks loading, the call and the output types)."""
    from mmie_pipe.adapters.detectors import build_detector
    from mmie_pipe.records import DetectedObject

    tiny_vision_models.build_tiny_owlv2(tmp_path, WORDS)
    detector = build_detector("transformers_zero_shot", {"model": str(tmp_path), "queries": ["cat", "dog"], "device": "cpu"})
    detector.load()
    assert detector.identity()["queries"] == ["cat", "dog"]
    found = detector.detect(Image.new("RGB", (64, 40), "red"))
    assert all(isinstance(o, DetectedObject) and o.label in {"cat", "dog"} and o.box.xmax <= 64 and o.box.ymax <= 40 for o in found)
