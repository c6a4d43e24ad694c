"""The `ofa` backend on ModelScope's real OFA code: a tiny random-weight `OfaForAllTasks` for visual
entailment (SNLI-VE style) and one for visual grounding (RefCOCO style) are built here in
ModelScope's folder format, then run through `OfaTool.entail` / `ground` and the RiVEG stages.

Needs its own environment (ModelScope's OFA preprocessor imports torchvision, which must match
torch): `bash scripts/setup-ofa.sh`, then `.venv-ofa/bin/python -m pytest -q tests/test_ofa.py`.
Elsewhere it is skipped.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("torchvision", reason="torchvision (matching torch) is not installed: see scripts/setup-ofa.sh")
pytest.importorskip("modelscope", reason="modelscope is not installed: see scripts/setup-ofa.sh")

from PIL import Image, ImageDraw  # noqa: E402

from mmie_pipe.adapters.ofa import OfaConfig, OfaTool, install_import_shims  # noqa: E402
from mmie_pipe.files import dir_sha256  # noqa: E402
from mmie_pipe.records import Entity, Record  # noqa: E402
from mmie_pipe.stages.riveg import EntailEntities, GroundEntities  # noqa: E402
from stage_bench import Bench  # noqa: E402

ANSWERS = {"yes": 0, "no": 1, "maybe": 2}  # SNLI-VE's entailment / contradiction / neutral
PATCH = 64  # the tiny model's input size (OFA-large: 480 / 512)


# -- a tiny OFA in ModelScope's folder format -------------------------------------------------------


def _byte_symbols() -> list[str]:
    """Byte-level BPE's printable stand-in for each of the 256 bytes (as GPT-2 / BART's vocabulary)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in kept else chr(next(shifted)) for b in range(256)]


def _write_bpe(folder: Path) -> None:
    """BART's special tokens, every byte, and merges that make OFA's answers and prompt words whole
    tokens. OFA's 8192 `<code_i>` and 1000 `<bin_i>` tokens are not in the file: ModelScope adds
    them after loading (model and preprocessor alike), so the `<bin_i>` are the vocabulary's last ids."""
    words = ["yes", "no", "maybe", "the", "image", "does", "describe", "which", "region", "text", "can", "imply"]
    merges: list[tuple[str, str]] = []
    tokens = ["<s>", "<pad>", "</s>", "<unk>", *_byte_symbols()]
    for word in words:
        piece = "Ġ"
        for char in word:
            if piece + char not in tokens:
                merges.append((piece, char))
                tokens.append(piece + char)
            piece += char
    tokens.append("<mask>")
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


def _plant_chain(model, rows: list[int], seed: int, growth: float = 3.0) -> None:
    """Make the decoder's next token after `rows[i]` be `rows[i + 1]`, whatever the image and text.

    The decoder's branches (self- and cross-attention, feed-forward) are silenced, so its output at
    each step is LayerNorm(E_prev); OFA ties the output projection to the embeddings, so token j
    scores E_j . LayerNorm(E_prev). Each planted row shares a direction with its successor only, and
    each successor is `growth` times as long as its predecessor (3: it beats the predecessor
    repeating itself by a wide margin; 0.1: it only just beats the rows left alone, which stay
    small and random)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(len(rows) + 1, model.config.d_model, generator=generator)
    basis -= basis.mean(dim=1, keepdim=True)  # LayerNorm centres: keep directions it leaves alone
    basis = torch.linalg.qr(basis.T).Q.T  # orthonormal, still centred
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        for i, row in enumerate(rows):
            weight[row] = growth**i * (basis[i] + basis[i + 1])
        for layer in model.decoder.layers:
            for silenced in (layer.self_attn_mid_layer_norm, layer.cross_attn_mid_layer_norm, layer.fc2):
                silenced.weight.zero_()
                silenced.bias.zero_()


def build_tiny_ofa(folder: Path, task: str, *, answer: str = "yes", sure: bool = True,
                   bins: tuple[int, ...] = (250, 300, 700, 800), seed: int = 0) -> Path:
    """A random OFA (1+1 layers, d_model 32, the smallest ResNet stem) for `visual-entailment` or
    `visual-grounding`, with the configuration.json ModelScope's pipeline and preprocessor read.
    Entailment is planted to answer `answer` (with a probability near 1, or, not `sure`, just over
    the other two: about 0.43); grounding to write the location tokens `bins` (x0, y0, x1, y1 in
    0..999), so the tests know what the adapter must return."""
    import torch

    install_import_shims()
    from modelscope.models.multi_modal.ofa import OFAModel, OFATokenizer
    from modelscope.models.multi_modal.ofa.configuration_ofa import OFAConfig

    folder.mkdir(parents=True, exist_ok=True)
    _write_bpe(folder)
    tokenizer = OFATokenizer.from_pretrained(str(folder))
    tokenizer.add_tokens([f"<code_{i}>" for i in range(8192)])
    tokenizer.add_tokens([f"<bin_{i}>" for i in range(1000)])
    vocab = tokenizer.get_vocab()
    config = OFAConfig(
        vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        resnet_type="resnet18", dropout=0.0,
    )
    torch.manual_seed(seed)
    model = OFAModel(config).eval()
    if task == "visual-entailment":
        # Every entailment prompt ends with "?": the answer's first token follows it.
        _plant_chain(model, [vocab["?"], vocab["Ġ" + answer]], seed, growth=3.0 if sure else 0.1)
    else:
        # Then the end of the sequence: beam search scores it over the whole vocabulary.
        _plant_chain(model, [tokenizer.bos_token_id, *(vocab[f"<bin_{b}>"] for b in bins), tokenizer.eos_token_id], seed)
    config.save_pretrained(str(folder))
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # the format of ModelScope's OFA checkpoints

    settings = {"type": "ofa", "language": "en", "patch_image_size": PATCH, "max_image_size": PATCH,
                "max_src_length": 64, "seed": 7, "imagenet_default_mean_and_std": False}
    if task == "visual-entailment":
        # Scored over the three answers (a constrained trie), so the label comes with a probability;
        # the decoder is prompted with the question (OFA's SNLI-VE recipe: the default prompt type
        # leaves an empty prefix that ModelScope's collate cannot batch).
        settings.update(gen_type="traverse", answer2label="answer2label.json", prompt_type="prev_output")
        (folder / "answer2label.json").write_text(json.dumps(ANSWERS))
    else:
        # Four location tokens, each one of the 1000 `<bin_i>` (the vocabulary's last ids).
        settings.update(gen_type="generation", beam_search={
            "beam_size": 5, "max_len_b": 4, "min_len": 4, "no_repeat_ngram_size": 3,
            "constraint_range": f"{len(vocab) - 1000},{len(vocab)}",
        })
    configuration = {"framework": "pytorch", "task": task, "pipeline": {"type": task}, "model": settings,
                     "preprocessor": {"type": "ofa-tasks-preprocessor"}}
    (folder / "configuration.json").write_text(json.dumps(configuration, indent=2))
    return folder


# -- fixtures ---------------------------------------------------------------------------------------

PHOTOS = None
try:
    import skimage

    PHOTOS = Path(skimage.__file__).parent / "data"
except ImportError:  # a drawn picture stands in (scripts/setup-ofa.sh installs scikit-image)
    pass


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ofa")
    return {
        "yes": build_tiny_ofa(root / "ve-yes", "visual-entailment", answer="yes"),
        "no": build_tiny_ofa(root / "ve-no", "visual-entailment", answer="no"),
        "doubt": build_tiny_ofa(root / "ve-doubt", "visual-entailment", answer="no", sure=False),
        "ground": build_tiny_ofa(root / "vg", "visual-grounding", bins=(250, 300, 700, 800)),
    }


@pytest.fixture(scope="module")
def tools(folders):
    made = {
        "yes": OfaTool(OfaConfig(model=str(folders["yes"]), task="visual_entailment")),
        "no": OfaTool(OfaConfig(model=str(folders["no"]), task="visual_entailment")),
        "doubt": OfaTool(OfaConfig(model=str(folders["doubt"]), task="visual_entailment")),
        "ground": OfaTool(OfaConfig(model=str(folders["ground"]), task="visual_grounding")),
    }
    for tool in made.values():
        run(tool.start())  # what the runner does with a backend: load once
    return made


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Two photos of different sizes (the cat 451x300, the coffee cup 600x400)."""
    if PHOTOS is not None:
        return [PHOTOS / "chelsea.png", PHOTOS / "coffee.png"]
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for name, size in (("cat.png", (451, 300)), ("cup.png", (600, 400))):
        picture = Image.new("RGB", size, (200, 180, 150))
        ImageDraw.Draw(picture).ellipse((40, 40, size[0] - 40, size[1] - 40), fill=(90, 60, 30))
        picture.save(root / name)
        paths.append(root / name)
    return paths


def entity(post: str, surface: str, etype: str) -> Entity:
    start = post.index(surface)
    return Entity(text=surface, start=start, end=start + len(surface), type=etype)


# -- the tool -------------------------------------------------------------------------------------


def test_entailment_label_and_probability(tools, photos):
    image = Image.open(photos[0]).convert("RGB")
    for premise in (None, "my cat Chelsea sleeps all day"):  # hypothesis alone, or with the post
        yes = tools["yes"].entail(image, "a cat", premise)
        assert yes["label"] == "yes" and 0.99 < yes["prob"] <= 1.0 and yes["yes_prob"] == yes["prob"]
        no = tools["no"].entail(image, "a cat", premise)
        assert no["label"] == "no" and 0.99 < no["prob"] <= 1.0
        # P(yes) is not reported when yes loses: the bound is at most the rest, never above one half.
        assert no["yes_prob"] == pytest.approx(1.0 - no["prob"]) and 0.0 <= no["yes_prob"] <= 0.5
        # A "no" that barely wins (three answers: under one half): P(yes) is at most that "no".
        doubt = tools["doubt"].entail(image, "a cat", premise)
        assert doubt["label"] == "no" and 1 / 3 < doubt["prob"] < 0.5
        assert doubt["yes_prob"] == pytest.approx(doubt["prob"])


def test_grounding_box_is_in_the_images_pixels(tools, photos):
    for path in photos:
        image = Image.open(path).convert("RGB")
        width, height = image.size
        out = tools["ground"].ground(image, "the cat")
        x0, y0, x1, y1 = out["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        # The planted location tokens, read back in this image's own pixels (bin / 999 of each side).
        expected = [250 * width / 999, 300 * height / 999, 700 * width / 999, 800 * height / 999]
        assert out["box"] == pytest.approx(expected, abs=0.06)
        assert out["score"] == 1.0  # ModelScope's constant


def test_identity_is_the_folders_content(tools, folders, tmp_path):
    import shutil

    tool = tools["ground"]
    assert tool.identity() == {"name": "ofa", "task": "visual_grounding", "weights": dir_sha256(folders["ground"])}
    assert tool.identity() != tools["yes"].identity()
    copy = shutil.copytree(folders["ground"], tmp_path / "copy")
    assert OfaTool(OfaConfig(model=str(copy), task="visual_grounding")).identity() == tool.identity()
    (copy / "configuration.json").write_text((copy / "configuration.json").read_text().replace('"beam_size": 5', '"beam_size": 4'))
    assert OfaTool(OfaConfig(model=str(copy), task="visual_grounding")).identity()["weights"] != tool.identity()["weights"]
    assert tool.capabilities == {"ground"} and tools["yes"].capabilities == {"entail"}


def test_clear_errors(tools, tmp_path):
    from mmie_pipe.errors import ConfigError, MissingDependency

    # A missing folder is refused before ModelScope can mistake the path for a hub id to download.
    with pytest.raises(ConfigError, match="model folder not found"):
        OfaTool(OfaConfig(model=str(tmp_path / "models" / "ofa_large"), task="visual_entailment")).load()
    image = Image.new("RGB", (32, 32))
    with pytest.raises(ConfigError, match="entailment model"):
        tools["yes"].ground(image, "a cat")
    with pytest.raises(ConfigError, match="grounding model"):
        tools["ground"].entail(image, "a cat")
    # What stands in for absent speech-only packages fails loudly if anything calls it.
    import sys

    if "fairseq stub" in tools["yes"].shims:
        with pytest.raises(MissingDependency, match="fairseq"):
            sys.modules["fairseq.modules"].LayerNorm(8)


# -- the RiVEG stages on OFA ----------------------------------------------------------------------


def test_entail_and_ground_stages_on_ofa(tools, photos, tmp_path):
    bench = Bench(tmp_path)
    width, height = Image.open(photos[0]).size
    post = "Chelsea the cat ignores Tom"
    params = {"query": "name"}
    pictured = bench.stage(EntailEntities, params, tools["yes"])
    absent = bench.stage(EntailEntities, params, tools["no"])
    ground = bench.stage(GroundEntities, params, tools["ground"])

    seen = Record(id="a", text=post, image=str(photos[0]), entities=[entity(post, "Chelsea", "MISC")])
    bench.process(seen, pictured, ground)
    cat = seen.entities[0]
    assert pictured.method == ground.method == "ofa" and not seen.errors
    assert cat.groundable is True and cat.groundable_prob > 0.99
    assert 0 <= cat.box.xmin < cat.box.xmax <= width and 0 <= cat.box.ymin < cat.box.ymax <= height
    assert cat.box.xmin == pytest.approx(250 * width / 999, abs=0.06) and cat.box_score == 1.0
    assert cat.provenance["groundable_prob"] == "entail.v1 ofa" and cat.provenance["boxes"] == "ground.v1 ofa"

    unseen = Record(id="b", text=post, image=str(photos[0]), entities=[entity(post, "Tom", "PER")])
    bench.process(unseen, absent, ground)
    tom = unseen.entities[0]
    assert tom.groundable is False and tom.groundable_prob < 0.01 and not tom.boxes  # not grounded
    # A doubtful "no" stays a no: its P(yes) bound is under the stage's threshold (0.5).
    doubtful = Record(id="d", text=post, image=str(photos[0]), entities=[entity(post, "Tom", "PER")])
    bench.process(doubtful, bench.stage(EntailEntities, params, tools["doubt"]))
    assert doubtful.entities[0].groundable is False and 1 / 3 < doubtful.entities[0].groundable_prob < 0.5

    calls = bench.stats.calls
    assert calls == 4
    again = Record(id="a", text=post, image=str(photos[0]), entities=[entity(post, "Chelsea", "MISC")])
    bench.process(again, pictured, ground)
    assert bench.stats.calls == calls and again.entities[0].box == cat.box  # both from the cache

    # A missing image is the entity's error, naming the file; the stage and the record go on.
    lost = Record(id="c", text=post, image=str(tmp_path / "gone.jpg"), entities=[entity(post, "Chelsea", "MISC")])
    bench.process(lost, pictured)
    assert [e.stage for e in lost.errors] == ["entail.v1"]
    assert "'Chelsea'" in lost.errors[0].reason and "file not found" in lost.errors[0].reason
    assert lost.entities[0].groundable is None
