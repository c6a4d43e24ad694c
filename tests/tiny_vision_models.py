"""Tiny random-weight vision models built offline from configs (no hub): a LLaVA whose whole
vocabulary fits in a top-20 log-probability list (so yes/no probabilities are exact) and an OWLv2."""

from __future__ import annotations

from pathlib import Path

WORDS = "yes no { } [ ] , : bbox_2d 0 1 5 person cat".split()  # 19 tokens with the specials
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
PAD, BOS, EOS, IMAGE = 0, 2, 3, 4
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def word_tokenizer(words: list[str] | None = None, **extra):
    """A word-level tokenizer over SPECIALS + `words` (default: this module's WORDS)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(SPECIALS + (WORDS if words is None else words))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", **extra
    )


def build_tiny_llava(directory: Path) -> Path:
    import torch
    import transformers

    config = transformers.LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", projection_dim=32, **{**VISION, "num_hidden_layers": 2}),
        text_config=dict(model_type="llama", vocab_size=len(SPECIALS) + len(WORDS), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD),
        image_token_index=IMAGE, vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # answers are words, never special tokens
        model.get_output_embeddings().weight[: len(SPECIALS)] = 0.0
    processor = transformers.LlavaProcessor(
        image_processor=transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=word_tokenizer(extra_special_tokens={"image_token": "<image>"}),
        patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def build_tiny_owlv2(directory: Path, words: list[str] | None = None) -> Path:
    import torch
    import transformers

    tokenizer = word_tokenizer(words)
    config = transformers.Owlv2Config(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS),
        vision_config=VISION, projection_dim=32,
    )
    torch.manual_seed(0)
    transformers.Owlv2ForObjectDetection(config).save_pretrained(directory)
    transformers.Owlv2Processor(
        image_processor=transformers.Owlv2ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    ).save_pretrained(directory)
    return directory
