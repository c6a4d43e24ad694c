"""Image loading: formats, orientation, and a clear per-record error for every bad image."""

from __future__ import annotations

import asyncio
import struct
import zlib
from pathlib import Path

import pytest

PIL = pytest.importorskip("PIL")
np = pytest.importorskip("numpy")
from PIL import Image  # noqa: E402

from mmie_pipe.images import ImageError, ImageOptions, image_digest, load_image, materialize_for_model, read_image_bytes  # noqa: E402
from mmie_pipe.model_io import ImagePart  # noqa: E402


def noise_jpeg(path: Path, size=(64, 48)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, format="JPEG")
    return path


def png_with_declared_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims width x height pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


# -- bad images -------------------------------------------------------------------------------------


def test_truncated_jpeg_is_a_clear_error(tmp_path):
    good = noise_jpeg(tmp_path / "good.jpg").read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError, match=r"^image .*cut\.jpg: cannot decode \(truncated or corrupt"):
        load_image(str(bad))


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: file is empty \(0 bytes\)"):
        load_image(str(empty))


def test_directory_instead_of_file(tmp_path):
    folder = tmp_path / "photo.jpg"
    folder.mkdir()
    with pytest.raises(ImageError, match="is a directory, not an image file"):
        load_image(str(folder))


def test_missing_file_and_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image(str(tmp_path / "nope.jpg"))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    with pytest.raises(ImageError, match="not a recognised image format"):
        load_image(str(text))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    huge = png_with_declared_size(tmp_path / "bomb.png", 100_000, 100_000)  # 10 gigapixels, 100 bytes
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(str(huge))
    # Our own limit applies below Pillow's, with the declared size in the message.
    modest = png_with_declared_size(tmp_path / "big.png", 5000, 4000)
    with pytest.raises(ImageError, match=r"declares 5000x4000 = 20000000 pixels, over the limit of 1000000"):
        load_image(str(modest), ImageOptions(max_pixels=1_000_000))


def test_remote_images_need_permission():
    with pytest.raises(ImageError, match="remote images are disabled; set the stage parameter allow_remote"):
        load_image("https://example.com/a.jpg")
    with pytest.raises(ImageError, match="unsupported URL scheme 'ftp'"):
        load_image("ftp://example.com/a.jpg")


def test_byte_limit(tmp_path):
    path = noise_jpeg(tmp_path / "a.jpg")
    with pytest.raises(ImageError, match="over the 100-byte limit"):
        read_image_bytes(str(path), ImageOptions(max_bytes=100))


# -- good images ------------------------------------------------------------------------------------


def test_file_url_relative_root_and_hash_match_image_part(tmp_path):
    path = noise_jpeg(tmp_path / "a b.jpg")
    loaded = load_image(path.as_uri())  # file:///.../a%20b.jpg
    assert loaded.image.mode == "RGB" and loaded.size == (64, 48)
    assert load_image("a b.jpg", ImageOptions(image_root=str(tmp_path))).sha256 == loaded.sha256
    # The same content hash as the model layer's ImagePart, so caches agree.
    assert image_digest(str(path)) == ImagePart.from_path(path).sha256


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    img.save(path, format="JPEG", exif=exif)
    loaded = load_image(str(path))
    assert loaded.size == (20, 40)
    assert loaded.normalized  # a model must be sent the upright version


@pytest.mark.parametrize(
    "make, fmt",
    [
        (lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG"),  # fully transparent -> white
        (lambda: Image.new("LA", (8, 8), (0, 0)), "PNG"),
        (lambda: Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG"),  # CMYK white
        (lambda: Image.new("P", (8, 8), 0), "GIF"),
        (lambda: Image.new("1", (8, 8), 1), "PNG"),
        (lambda: Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)), "PNG"),  # 16-bit grey, full scale
    ],
)
def test_modes_become_8bit_rgb(tmp_path, make, fmt):
    path = tmp_path / f"img.{fmt.lower()}"
    make().save(path, format=fmt)
    loaded = load_image(str(path))
    assert loaded.image.mode == "RGB"
    pixel = loaded.image.getpixel((4, 4))
    if fmt != "GIF":
        assert min(pixel) >= 250, (fmt, pixel)  # white / full-scale stays bright after conversion


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(path)
    value = load_image(str(path)).image.getpixel((0, 0))[0]
    assert 120 <= value <= 135  # mid-grey stays mid-grey


def test_materialize_sends_plain_files_as_is_and_normalizes_others(tmp_path):
    plain = noise_jpeg(tmp_path / "plain.jpg")
    raw = read_image_bytes(str(plain))
    path, mime, digest = materialize_for_model(load_image(str(plain)), raw, tmp_path / "scratch")
    assert (path, mime, digest) == (str(plain), "image/jpeg", raw.sha256)

    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(cmyk, format="JPEG")
    raw = read_image_bytes(str(cmyk))
    path, mime, digest = materialize_for_model(load_image(str(cmyk)), raw, tmp_path / "scratch")
    assert mime == "image/png" and Path(path).parent == tmp_path / "scratch"
    assert Image.open(path).mode == "RGB" and digest == ImagePart.from_path(path).sha256


# -- in a pipeline: a bad image is that record's error in the image stages only ------------------


def test_bad_images_are_per_record_errors_in_a_run(tmp_path):
    from mmie_pipe.pipeline import validate_pipeline
    from mmie_pipe.runner import Runner

    good = noise_jpeg(tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[:300])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "dir.jpg").mkdir()
    png_with_declared_size(tmp_path / "bomb.png", 100_000, 100_000)
    names = ["cut.jpg", "empty.jpg", "dir.jpg", "bomb.png", "missing.jpg"]
    lines = [{"id": f"r{i}", "text": "Hello Paris", "image": str(tmp_path / n), "caption": "a tower"} for i, n in enumerate(names)]
    lines.append({"id": "noimg", "text": "No picture here"})
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(__import__("json").dumps(x) for x in lines) + "\n")

    # Image stages with a stub detector so this test needs no model files.
    from stub_tools import register_stub_detector

    register_stub_detector()

    raw = {
        "name": "t",
        "stages": [
            {"stage": "objects", "params": {"detector": "stub_boxes"}},
            {"stage": "caption", "params": {"source": "auto"}},
            {"stage": "visual_context"},
        ],
        "runtime": {"cache_path": str(tmp_path / "c.sqlite")},
    }
    report = validate_pipeline(raw)
    assert report.ok, report.problems
    summary = asyncio.run(Runner(report.config).run(src, tmp_path / "out", progress=False))
    out = [__import__("json").loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert summary.records == 6
    by_id = {o["id"]: o for o in out}
    expected = {
        "r0": "truncated or corrupt", "r1": "file is empty", "r2": "is a directory",
        "r3": "decompression bomb", "r4": "file not found",
    }
    for rid, fragment in expected.items():
        (err,) = by_id[rid]["errors"]
        assert err["stage"] == "objects.v1" and err["kind"] == "image" and fragment in err["reason"]
        # Text-side stages still ran: the input caption became the visual context.
        assert by_id[rid]["visual_context"] == "a tower"
    assert "errors" not in by_id["noimg"] or not by_id["noimg"]["errors"]
    assert "objects" not in by_id["noimg"]
