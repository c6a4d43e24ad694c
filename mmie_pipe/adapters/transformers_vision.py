"""Image-text model families for the transformers backend. The text backend imports this lazily,
only when `family` is not `causal_lm`.

- `blip2`: BLIP-2 (OPT or Flan-T5 language model). Takes one image; the prompt is plain text
  (BLIP-2 continues a phrase such as "a photo of" or answers "Question: ... Answer:").
- `llava`: LLaVA-1.5 style models; the prompt comes from the processor's chat template, with the
  image where the message puts it.
- `image_text_to_text`: any other model `AutoModelForImageTextToText` loads (Qwen2-VL, LLaVA-NeXT,
  Idefics...), prompted through its processor's chat template like `llava`.

Images are read from the request's `ImagePart` paths with `mmie_pipe.images` (EXIF-upright RGB);
resizing and normalisation are the processor's job.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..model_io import ImagePart, ModelRequest

MODEL_CLASSES = {
    "blip2": "Blip2ForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration",
    "image_text_to_text": "AutoModelForImageTextToText",
}
VISION_FAMILIES: tuple[str, ...] = tuple(MODEL_CLASSES)
# Used when a processor ships no chat template (the LLaVA-1.5 conversation format).
FALLBACK_TEMPLATE = "USER: {images}\n{text} ASSISTANT:"
PROCESSOR_KWARGS = ("revision", "local_files_only", "trust_remote_code")


def load_vision_model(family: str, model: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """(model, processor) from a local directory or the local HF cache."""
    import transformers

    if family not in MODEL_CLASSES:
        raise ConfigError(f"unknown transformers model family {family!r}; known: causal_lm, {', '.join(VISION_FAMILIES)}")
    model_cls = getattr(transformers, MODEL_CLASSES[family])
    processor = transformers.AutoProcessor.from_pretrained(model, **{k: kwargs[k] for k in PROCESSOR_KWARGS if k in kwargs})
    return model_cls.from_pretrained(model, **kwargs), processor


def output_echoes_prompt(model: Any) -> bool:
    """Whether `generate` returns the prompt before the new tokens (decoder-only language models
    do; encoder-decoder ones such as BLIP-2 with Flan-T5 return decoder tokens only)."""
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None) or config
    return not getattr(text_config, "is_encoder_decoder", False)


def _images(request: ModelRequest) -> list[Any]:
    from ..images import load_image

    out = []
    for part in request.images:
        if part.path is None:
            raise ValueError("image part has no path to read its bytes from")
        out.append(load_image(part.path).image)
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.text for p in content if p.type == "text")


def _blip2_inputs(processor: Any, request: ModelRequest, images: list[Any]) -> Any:
    if len(images) != 1:
        raise ValueError(f"BLIP-2 takes exactly one image per request, got {len(images)}")
    if request.prompt is not None:
        text = request.prompt
    else:  # BLIP-2 has no chat format: the user turns' text is the prompt
        text = "\n".join(_text_of(m.content) for m in request.messages or () if m.role == "user").strip()
    return processor(images=images[0], text=text, return_tensors="pt")


def _chat_prompt(processor: Any, request: ModelRequest) -> str:
    if request.prompt is not None:
        raise ValueError("image requests to chat vision models must use messages, not a plain prompt")
    if getattr(processor, "chat_template", None):
        conversation = []
        for m in request.messages or ():
            if isinstance(m.content, str):
                content = [{"type": "text", "text": m.content}]
            else:
                content = [{"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p.text} for p in m.content]
            conversation.append({"role": m.role, "content": content})
        return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    token = getattr(processor, "image_token", None) or "<image>"
    images = " ".join(token for _ in request.images)
    text = "\n".join(_text_of(m.content) for m in request.messages or () if m.role != "assistant")
    return FALLBACK_TEMPLATE.format(images=images, text=text)


def vision_inputs(backend: Any, request: ModelRequest) -> Any:
    """Processor outputs (input ids, attention mask, pixel values) for one image request, with
    floating tensors in the model's dtype (fp16/bf16 weights need fp16/bf16 pixels)."""
    family = backend.config.family
    processor = backend.processor
    images = _images(request)
    if family == "blip2":
        inputs = _blip2_inputs(processor, request, images)
    else:
        inputs = processor(images=images, text=_chat_prompt(processor, request), return_tensors="pt")
    dtype = getattr(backend.model, "dtype", None)
    return inputs.to(dtype=dtype) if dtype is not None else inputs
