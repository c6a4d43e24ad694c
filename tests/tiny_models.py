"""Tiny random-weight models built offline for backend tests (no hub, no downloads)."""

from __future__ import annotations

from pathlib import Path

WORDS = ["yes", "no", "maybe", "red", "green", "blue", "cat", "dog", "Paris", "Rome", "person", "location",
         "{", "}", "[", "]", ":", ",", '"', "answer", "entities", "the", "a", "is", "what", "user", "assistant"]


def build_tiny_llama(root: Path) -> tuple[Path, Path]:
    """A 2-layer Llama with a word/character vocabulary and chat template (`root/base`), and a LoRA
    adapter with a deliberately large update (`root/lora`). Head size 64: vLLM's CPU attention needs it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>", "<pad>"] + WORDS + [c for c in chars if c not in WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.Fuse()  # tokens are words or single characters: join them as they are
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}assistant :"
    fast.save_pretrained(root / "base")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(root / "base", safe_serialization=True)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False))
    with torch.no_grad():  # a large update, so the adapter visibly changes a random model's output
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 2.0)
    lora.save_pretrained(root / "lora")
    return root / "base", root / "lora"


LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def char_tokenizer(extra_special: tuple[str, ...] = ()):
    """A character-level tokenizer (every printable ASCII character and newline is a token), so any
    prompt encodes without unknown tokens and a single letter is a single token."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", *extra_special]
    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    extra = {"extra_special_tokens": {"image_token": extra_special[0]}} if extra_special else {}
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", **extra)


def build_tiny_llava(directory: Path) -> Path:
    """A random-weight LLaVA (CLIP vision tower + 2-layer Llama) with a character tokenizer and a
    chat template, saved like a user's local weights. Images are 32x32: 16 image tokens."""
    import torch
    import transformers

    tokenizer = char_tokenizer(("<image>",))
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    vision = dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32)
    config = transformers.LlavaConfig(
        vision_config=vision,
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3),
        image_token_index=image_token, vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration(config).eval()
    processor = transformers.LlavaProcessor(
        image_processor=transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
