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
