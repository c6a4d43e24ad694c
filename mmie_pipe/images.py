"""Loading post images safely: local paths, `file://` and `data:` URLs, and (only when enabled)
http(s) URLs.

Local images are confined to a root folder (in a run: the input file's folder, or `image_root`):
a `..`, an absolute path, a `file://` URL or a symlink that leads outside it is refused, so a post
file cannot make the tool read (and send to a model server) any file on the machine. Remote images
are off by default; when on, a redirect to another host and private or loopback addresses are
refused unless `allow_private_hosts` is set.

Every problem becomes an `ImageError` whose message starts with "image", so the runner files it as
a per-record error of kind "image" and the record's text-only stages still run. Images are
identified by the SHA-256 of their bytes (the same hash `ImagePart` uses in cache keys), so a cache
hit needs only `image_digest`, never a decode. Resizing for a model is the model processor's job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import ipaddress
import socket
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from pydantic import BaseModel, ConfigDict, Field

from .errors import MissingDependency, StageInputError

if TYPE_CHECKING:
    from PIL.Image import Image

# Pillow's own default bomb limit (about 89.5 megapixels, a 1024x1024x3x32 byte budget).
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
# Formats every vision server and processor decodes; anything else is re-encoded before sending.
PORTABLE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
EXIF_ORIENTATION = 0x0112


class ImageError(StageInputError):
    """An image that is missing, unreadable, too large or refused. The message names the image."""

    def __init__(self, ref: str, reason: str):
        super().__init__(f"image {ref}: {reason}")
        self.ref = ref
        self.reason = reason


class ImageOptions(BaseModel):
    """How stages find and open images; every vision stage accepts these parameters."""

    model_config = ConfigDict(extra="forbid")

    # Local images must lie inside this folder, and relative paths resolve against it (in a run
    # the default is the input file's folder; set it to widen or move the root).
    image_root: str | None = None
    # http(s) images are fetched only when enabled: a post file should not make us call the web.
    allow_remote: bool = False
    # Remote images on loopback, private or link-local addresses (an intranet) need this too.
    allow_private_hosts: bool = False
    remote_timeout_s: float = Field(default=20.0, gt=0)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0)
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, gt=0)


@dataclass
class ImageBytes:
    """The raw bytes of an image and where they came from."""

    ref: str  # what the record said (shown in errors)
    data: bytes
    path: str | None  # local file holding exactly these bytes, if any

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class LoadedImage:
    """A decoded, upright, 8-bit RGB image plus the hash of the bytes it came from."""

    ref: str
    sha256: str
    image: "Image"
    format: str | None
    # True when what a model should see differs from the file (rotated by EXIF, converted mode or
    # an exotic format): such images are re-encoded before being sent to a model.
    normalized: bool
    path: str | None

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def _pil():
    try:
        import PIL.Image
        import PIL.ImageOps
    except ImportError as exc:
        raise MissingDependency("pillow", "vision", "image loading") from exc
    return PIL


def is_remote(ref: str) -> bool:
    return urlparse(ref).scheme in ("http", "https")


def local_path(ref: str, image_root: str | None = None) -> Path:
    """The file a local reference names: a plain path (relative to `image_root`) or `file://`."""
    parsed = urlparse(ref)
    if parsed.scheme == "file":
        return Path(url2pathname(unquote(parsed.path)))
    path = Path(ref).expanduser()
    if not path.is_absolute() and image_root:
        path = Path(image_root).expanduser() / path
    return path


def read_image_bytes(ref: str, options: ImageOptions | None = None) -> ImageBytes:
    """The bytes behind a reference, with a clear `ImageError` for every way this can fail."""
    options = options or ImageOptions()
    if not ref or not ref.strip():
        raise ImageError(repr(ref), "empty image reference")
    if ref.startswith("data:"):
        return ImageBytes(_shown(ref), _data_url_bytes(ref, options), None)
    if is_remote(ref):
        return ImageBytes(ref, _fetch(ref, options), None)
    scheme = urlparse(ref).scheme
    if scheme not in ("", "file") and len(scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise ImageError(ref, f"unsupported URL scheme {scheme!r} (use a path, file://, data: or http(s)://)")
    path = local_path(ref, options.image_root)
    if options.image_root:
        _confine(ref, path, Path(options.image_root).expanduser())
    if not path.exists():
        raise ImageError(ref, f"file not found ({path})")
    if path.is_dir():
        raise ImageError(ref, f"is a directory, not an image file ({path})")
    size = path.stat().st_size
    if size == 0:
        raise ImageError(ref, "file is empty (0 bytes)")
    if size > options.max_bytes:
        raise ImageError(ref, f"file is {size} bytes, over the {options.max_bytes}-byte limit (max_bytes)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(ref, f"cannot read file: {exc.strerror or exc}") from exc
    return ImageBytes(ref, data, str(path))


def _confine(ref: str, path: Path, root: Path) -> None:
    """Refuse a path that leaves `root` once `..` and symlinks are resolved."""
    real_root = root.resolve()
    real = path.resolve()
    if real != real_root and real_root not in real.parents:
        raise ImageError(
            ref,
            f"refused: outside the image folder {real_root} (set the stage parameter image_root to a "
            "folder that holds it to allow this)",
        )


def _shown(ref: str, limit: int = 60) -> str:
    return ref if len(ref) <= limit else ref[:limit] + "..."


def _data_url_bytes(ref: str, options: ImageOptions) -> bytes:
    header, sep, payload = ref.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ImageError(_shown(ref), "a data: URL must be base64 (data:image/...;base64,...)")
    if len(payload) * 3 // 4 > options.max_bytes:
        raise ImageError(_shown(ref), f"data: URL is over the {options.max_bytes}-byte limit (max_bytes)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(_shown(ref), f"data: URL is not valid base64: {exc}") from None
    if not data:
        raise ImageError(_shown(ref), "data: URL is empty")
    return data


def _check_host(url: str, options: ImageOptions) -> None:
    """Private, loopback and link-local addresses are refused unless explicitly allowed."""
    if options.allow_private_hosts:
        return
    host = urlparse(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as exc:
        raise ImageError(url, f"cannot resolve host {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            raise ImageError(
                url, f"refused: {host} is a private or loopback address ({address}); "
                "set allow_private_hosts: true to fetch from it"
            )


def _fetch(url: str, options: ImageOptions) -> bytes:
    if not options.allow_remote:
        raise ImageError(url, "remote images are disabled; set the stage parameter allow_remote: true to fetch them")
    import httpx

    _check_host(url, options)
    try:
        # Redirects are not followed: one to another host (or to an intranet address) is refused.
        with httpx.stream("GET", url, timeout=options.remote_timeout_s, follow_redirects=False) as resp:
            if resp.is_redirect:
                target = str(resp.next_request.url) if resp.next_request else resp.headers.get("location", "?")
                raise ImageError(url, f"refused: redirected to {target} (redirects are not followed)")
            if resp.status_code != 200:
                raise ImageError(url, f"HTTP {resp.status_code} when fetching")
            chunks, total = [], 0
            for chunk in resp.iter_bytes():
                total += len(chunk)
                if total > options.max_bytes:
                    raise ImageError(url, f"download exceeds the {options.max_bytes}-byte limit (max_bytes)")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise ImageError(url, f"cannot fetch: {type(exc).__name__}: {exc}") from exc
    if total == 0:
        raise ImageError(url, "server returned an empty body")
    return b"".join(chunks)


def image_digest(ref: str, options: ImageOptions | None = None) -> str:
    """Content hash of an image without decoding it (enough to look up cached results)."""
    return read_image_bytes(ref, options).sha256


def decode_image(raw: ImageBytes, options: ImageOptions | None = None) -> LoadedImage:
    """Decode bytes into an upright RGB image, refusing decompression bombs before decoding."""
    options = options or ImageOptions()
    PIL = _pil()
    ref = raw.ref
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice it; we refuse at our own limit instead.
        warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
        try:
            img = PIL.Image.open(io.BytesIO(raw.data))
        except PIL.Image.UnidentifiedImageError as exc:
            raise ImageError(ref, "not a recognised image format (corrupt or not an image)") from exc
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as exc:
            raise ImageError(ref, f"refused as a possible decompression bomb: {exc}") from exc
        except OSError as exc:  # e.g. a file cut off inside its header
            raise ImageError(ref, f"cannot decode (truncated or corrupt file): {exc}") from exc
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageError(ref, f"declares an empty size {width}x{height}")
        if width * height > options.max_pixels:
            raise ImageError(
                ref,
                f"declares {width}x{height} = {width * height} pixels, over the limit of {options.max_pixels} "
                "(possible decompression bomb; raise max_pixels to accept it)",
            )
        fmt = img.format
        try:
            img.load()
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as exc:
            raise ImageError(ref, f"refused as a possible decompression bomb: {exc}") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(ref, f"cannot decode (truncated or corrupt file): {exc}") from exc
    orientation = _orientation(img)
    upright = PIL.ImageOps.exif_transpose(img) if orientation not in (None, 1) else img
    rgb = to_rgb(upright)
    normalized = orientation not in (None, 1) or img.mode not in ("RGB", "L") or fmt not in PORTABLE_FORMATS
    return LoadedImage(ref=ref, sha256=raw.sha256, image=rgb, format=fmt, normalized=normalized, path=raw.path)


def load_image(ref: str, options: ImageOptions | None = None) -> LoadedImage:
    return decode_image(read_image_bytes(ref, options), options)


def _orientation(img: Any) -> int | None:
    try:
        return img.getexif().get(EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a good image unusable
        return None


def to_rgb(img: "Image") -> "Image":
    """8-bit RGB from any Pillow mode: transparency goes onto white, high bit depths are scaled."""
    PIL = _pil()
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scale_to_8bit(img).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = PIL.Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _scale_to_8bit(img: "Image") -> "Image":
    import numpy as np

    PIL = _pil()
    arr = np.asarray(img, dtype=np.float64)
    top = float(arr.max()) if arr.size else 0.0
    # 16-bit data uses the full 0..65535 range; other wide data is stretched from its own maximum.
    scale = 255.0 / 65535.0 if top > 255 and top <= 65535 and img.mode.startswith("I") else (255.0 / top if top > 255 else 1.0)
    return PIL.Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")


def encode_png(img: "Image") -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def materialize_for_model(loaded: LoadedImage, raw: ImageBytes, directory: Path | None = None) -> tuple[str, str, str]:
    """(path, mime, sha256) of a file a model backend can read and send as-is.

    A plain JPEG/PNG/WebP/GIF file on disk is used directly. Images a server might show differently
    from us (EXIF-rotated, CMYK, 16-bit, exotic formats) or that came from a URL are written once,
    upright RGB PNG, to a content-addressed scratch directory.
    """
    if not loaded.normalized and raw.path is not None:
        return raw.path, PORTABLE_FORMATS[loaded.format or "JPEG"], raw.sha256
    directory = directory or Path(tempfile.gettempdir()) / "mmie-pipe-images"
    directory.mkdir(parents=True, exist_ok=True)
    if loaded.normalized:
        data, suffix, mime = encode_png(loaded.image), ".png", "image/png"
    else:
        data, suffix, mime = raw.data, "." + (loaded.format or "jpeg").lower(), PORTABLE_FORMATS[loaded.format or "JPEG"]
    digest = hashlib.sha256(data).hexdigest()
    target = directory / f"{digest}{suffix}"
    if not target.exists():
        scratch = target.with_suffix(target.suffix + f".{id(data)}.tmp")
        scratch.write_bytes(data)
        scratch.replace(target)
    return str(target), mime, digest


@dataclass(frozen=True)
class ModelImage:
    """A record's image as a model request part, with the pixel size the model is shown."""

    part: Any  # mmie_pipe.model_io.ImagePart
    width: int
    height: int


def model_image(ref: str, options: ImageOptions | None = None, scratch: Path | None = None) -> ModelImage:
    """The one way a stage turns `record.image` into an `ImagePart`.

    A local JPEG/PNG/WebP/GIF in RGB or grey with no EXIF rotation is sent as it is: only its header
    is read (size, mode, orientation), never its pixels, so a request answered from the cache costs
    a file read and a hash. Anything else is decoded once and re-encoded upright (as the caption
    stage does) before it can be sent.
    """
    from .model_io import ImagePart

    options = options or ImageOptions()
    raw = read_image_bytes(ref, options)
    PIL = _pil()
    try:
        head = PIL.Image.open(io.BytesIO(raw.data))  # lazy: parses the header only
        width, height, fmt, mode, orientation = *head.size, head.format, head.mode, _orientation(head)
    except Exception as exc:  # noqa: BLE001 - any header problem: let the full decoder explain it
        decode_image(raw, options)
        raise ImageError(ref, f"cannot read the image header: {exc}") from exc
    if width * height > options.max_pixels:
        decode_image(raw, options)  # raises the same bomb message every stage gives
    if raw.path is not None and fmt in PORTABLE_FORMATS and mode in ("RGB", "L") and orientation in (None, 1):
        return ModelImage(ImagePart(sha256=raw.sha256, mime=PORTABLE_FORMATS[fmt], path=raw.path), width, height)
    loaded = decode_image(raw, options)
    path, mime, digest = materialize_for_model(loaded, raw, scratch)
    width, height = loaded.image.size
    return ModelImage(ImagePart(sha256=digest, mime=mime, path=path), width, height)
