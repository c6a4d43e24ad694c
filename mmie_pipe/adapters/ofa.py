"""OFA (visual entailment and visual grounding) through ModelScope's `OfaForAllTasks`: RiVEG's models.

The paper's checkpoints are OFA-large fine-tuned on SNLI-VE (`damo/ofa_visual-entailment_snli-ve_large_en`)
and on RefCOCO (`damo/ofa_visual-grounding_refcoco_large_en`). Weights come from a local
ModelScope-format directory (`configuration.json`, `config.json`, `pytorch_model.bin`,
`vocab.json` + `merges.txt`); nothing is downloaded (a missing folder is refused: ModelScope would
take the path for a hub id). One backend serves one task; declare two for entailment and grounding.

ModelScope 1.40's OFA code needs these to run with today's libraries (measured with transformers 5
and torch 2.14 in tests/test_ofa.py):
- it imports fairseq (the speech model) and its OFA preprocessor package imports torchaudio,
  librosa and soundfile (the speech preprocessor) at module load: stub packages stand in for those
  that are absent (calling into one fails loudly). Stub modules carry a spec, because transformers
  probes for torchaudio with importlib.util.find_spec;
- transformers 5 moved `BasicTokenizer`/`WordpieceTokenizer` to `tokenization_bert_legacy` and
  dropped `tokenization_bart_fast`: both old names are pointed at their new homes; its configs no
  longer define `forced_bos_token_id`, which `OFAConfig.__init__` reads: it defaults to None;
- its OFA preprocessors import torchvision (image transforms: the build that matches the installed
  torch) and, through the package, timm, cv2, decord and a few small libraries: the `ofa` extra.

What the pipelines return: entailment gives only the top label (yes / no / maybe) and its
probability, with the hypothesis as `text` and the premise as `text2`; grounding gives one box and
a constant score of 1.0. Batched entailment fails inside ModelScope (KeyError 'decoder_prompts'),
so calls are one image at a time (under the tool's lock).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ConfigError, MissingDependency
from ..registry import backends
from ..vision.boxes import clip_box
from .tools import LocalTool, ToolConfig

if TYPE_CHECKING:
    from PIL.Image import Image

# What ModelScope's OFA modules import at load time for speech only (the MMSpeech model and the
# ASR preprocessor, which its OFA preprocessor package imports with all the others). Each package
# is stubbed only when it is not installed; the image tasks never call into them.
_SPEECH_STUBS: dict[str, dict[str, tuple[str, ...]]] = {
    "fairseq": {
        "fairseq.data.audio.feature_transforms": ("CompositeAudioFeatureTransform",),
        "fairseq.data.audio.speech_to_text_dataset": ("S2TDataConfig",),
        "fairseq.data.data_utils": ("compute_mask_indices",),
        "fairseq.models.wav2vec.wav2vec2": ("TransformerSentenceEncoderLayer",),
        "fairseq.modules": ("LayerNorm", "SamePad", "TransposeLast"),
        "fairseq.modules.transformer_sentence_encoder": ("init_bert_params",),
        "fairseq.utils": ("index_put",),
    },
    "torchaudio": {"torchaudio.compliance.kaldi": ("fbank",)},
    "librosa": {"librosa": ("load",)},
    "soundfile": {"soundfile": ("read",)},
}


def _unavailable(package: str, name: str) -> type:
    def fail(*_args: Any, **_kwargs: Any) -> None:
        raise MissingDependency(package, "ofa", f"{name} (OFA's speech tasks)")

    return type(name, (), {"__init__": fail, "__call__": fail})


def _stub_package(root: str, names: dict[str, tuple[str, ...]]) -> None:
    for dotted, attrs in names.items():
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            module_name = ".".join(parts[:i])
            module = sys.modules.get(module_name)
            if module is None:
                module = types.ModuleType(module_name)
                module.__path__ = []  # a package, so submodules resolve
                # A spec, or importlib.util.find_spec (transformers probes torchaudio) raises ValueError.
                module.__spec__ = importlib.machinery.ModuleSpec(module_name, None, is_package=True)
                module.__mmie_stub__ = True
                sys.modules[module_name] = module
                if i > 1:
                    setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], module)
        for attr in attrs:
            if not hasattr(sys.modules[dotted], attr):
                setattr(sys.modules[dotted], attr, _unavailable(root, attr))


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def install_import_shims() -> list[str]:
    """Make ModelScope's OFA importable; returns what was shimmed (recorded in the manifest)."""
    done = []
    for package, names in _SPEECH_STUBS.items():
        if not _importable(package):
            _stub_package(package, names)
            done.append(f"{package} stub")
    bert = importlib.import_module("transformers.models.bert.tokenization_bert")
    if not hasattr(bert, "BasicTokenizer"):
        legacy = importlib.import_module("transformers.models.bert.tokenization_bert_legacy")
        bert.BasicTokenizer, bert.WordpieceTokenizer = legacy.BasicTokenizer, legacy.WordpieceTokenizer
        done.append("transformers BasicTokenizer/WordpieceTokenizer")
    if not _importable("transformers.models.bart.tokenization_bart_fast"):
        import transformers

        fast = types.ModuleType("transformers.models.bart.tokenization_bart_fast")
        fast.BartTokenizerFast = getattr(transformers, "BartTokenizerFast", None) or transformers.BartTokenizer
        sys.modules[fast.__name__] = fast
        done.append("transformers tokenization_bart_fast")
    from modelscope.models.multi_modal.ofa.configuration_ofa import OFAConfig
    from transformers import PretrainedConfig

    if not hasattr(PretrainedConfig(), "forced_bos_token_id"):
        # OFAConfig.__init__ reads it after super().__init__; transformers 5 configs no longer set it.
        OFAConfig.forced_bos_token_id = None
        done.append("OFAConfig.forced_bos_token_id")
    return done


class OfaConfig(ToolConfig):
    kind: Literal["ofa"] = "ofa"
    model: str  # local ModelScope-format directory of an OFA checkpoint
    task: Literal["visual_entailment", "visual_grounding"]
    device: str = "auto"


@backends.register("ofa")
class OfaTool(LocalTool):
    """One OFA checkpoint for one task: `entail(image, hypothesis, premise)` or `ground(image, text)`."""

    kind = "ofa"
    Config = OfaConfig

    def __init__(self, config: OfaConfig):
        super().__init__(config)
        self.config: OfaConfig = config
        self.pipe = None
        self.shims: list[str] = []

    @classmethod
    def capabilities_of(cls, config: OfaConfig) -> frozenset[str]:
        return frozenset({"entail"} if config.task == "visual_entailment" else {"ground"})

    def identity(self) -> dict[str, Any]:
        from ..files import dir_sha256

        return {"name": "ofa", "task": self.config.task, "weights": dir_sha256(self.config.model) or self.config.model}

    def load(self) -> None:
        if self.pipe is not None:
            return
        if not Path(self.config.model).is_dir():
            # ModelScope would take any other string for a hub id and try to download it.
            raise ConfigError(f"ofa: model folder not found: {self.config.model} (a local ModelScope-format folder)")
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            raise MissingDependency("transformers", "ofa", "OFA through ModelScope") from exc
        try:
            self.shims = install_import_shims()  # imports ModelScope's OFA config
            from modelscope.pipelines import pipeline
            from modelscope.utils.constant import Tasks
        except ImportError as exc:
            raise MissingDependency("modelscope", "ofa", f"OFA ({exc})") from exc
        import torch

        device = self.config.device if self.config.device != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
        task = Tasks.visual_entailment if self.config.task == "visual_entailment" else Tasks.visual_grounding
        try:
            self.pipe = pipeline(task, model=self.config.model, device=device)
        except (OSError, FileNotFoundError) as exc:
            raise ConfigError(f"ofa: cannot load {self.config.model}: {exc}") from exc

    def entail(self, image: "Image", hypothesis: str, premise: str | None = None) -> dict[str, Any]:
        """{"label": yes|no|maybe, "prob": the label's probability, "yes_prob": P(yes) where known}."""
        if self.config.task != "visual_entailment":
            raise ConfigError("ofa: this backend is a grounding model; entailment needs a visual_entailment one")
        self.load()
        query = {"image": image, "text": hypothesis}
        if premise:
            query["text2"] = premise
        with self._lock:
            out = self.pipe(query)
        label, prob = _first(out.get("labels")), float(_first(out.get("scores")))
        label = str(label).strip().lower()
        # Only the top label's probability is reported: P(yes) is exact when yes wins; otherwise it
        # is at most the rest (1 - prob) and at most the winner's prob, so a "no" never reads as
        # more likely yes than not.
        return {"label": label, "prob": prob, "yes_prob": prob if label == "yes" else max(0.0, min(prob, 1.0 - prob))}

    def ground(self, image: "Image", text: str) -> dict[str, Any]:
        """{"box": [x0, y0, x1, y1] in pixels, clipped, or None; "score": OFA's constant score}."""
        if self.config.task != "visual_grounding":
            raise ConfigError("ofa: this backend is an entailment model; grounding needs a visual_grounding one")
        self.load()
        with self._lock:
            out = self.pipe({"image": image, "text": text})
        coords = _first(out.get("boxes"))
        width, height = image.size
        box = clip_box(*coords, width, height) if coords is not None else None
        return {"box": [box.xmin, box.ymin, box.xmax, box.ymax] if box else None, "score": float(_first(out.get("scores")) or 0.0)}


def _first(value: Any) -> Any:
    """The pipeline returns one-element lists (sometimes nested) for one input."""
    while isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (int, float)):
        return value[0]
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value
