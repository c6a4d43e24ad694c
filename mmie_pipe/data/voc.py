"""Pascal-VOC annotation files (GMNER's `xml/<image id>.xml`): entity surface string -> boxes.

Well-formed files take ElementTree's C fast path; when anything is wrong the file is parsed again
with a line-tracking expat parser so the error can name the line it happened on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
import xml.etree.ElementTree as ET
from xml.parsers import expat

from pydantic import ValidationError

from ..records import Box
from .errors import DataFormatError

_COORDS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class VocAnnotation:
    """Boxes of one image, grouped by object name in file order, plus the image size if given."""

    boxes: dict[str, list[Box]] = field(default_factory=dict)
    width: int | None = None
    height: int | None = None


def read_voc(path: str | os.PathLike[str]) -> VocAnnotation:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    try:
        return _read_fast(data)
    except Exception:  # any problem: re-read slowly to report it with its line
        return _read_with_lines(Path(path), data)


def _read_fast(data: bytes) -> VocAnnotation:
    root = ET.fromstring(data)
    annotation = VocAnnotation()
    size = root.find("size")
    if size is not None:
        annotation.width = int(float(size.findtext("width")))
        annotation.height = int(float(size.findtext("height")))
    for obj in root.iter("object"):
        name = obj.findtext("name").strip()
        bndbox = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(bndbox.findtext(c)) for c in _COORDS)
        if not name:
            raise ValueError("empty name")
        annotation.boxes.setdefault(name, []).append(Box(xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax))
    return annotation


def _read_with_lines(path: Path, data: bytes) -> VocAnnotation:
    parser = expat.ParserCreate()
    annotation = VocAnnotation()
    stack: list[str] = []
    text: list[str] = []
    obj: dict[str, str] = {}
    obj_line = 0

    def start(tag: str, _attrs: dict) -> None:
        nonlocal obj, obj_line
        stack.append(tag)
        text.clear()
        if tag == "object":
            obj, obj_line = {}, parser.CurrentLineNumber

    def end(tag: str) -> None:
        stack.pop()
        value = "".join(text).strip()
        text.clear()
        parent = stack[-1] if stack else ""
        if "object" in stack and (tag == "name" and parent == "object" or tag in _COORDS and parent == "bndbox"):
            obj[tag] = value
            obj[f"{tag}@line"] = str(parser.CurrentLineNumber)
        elif tag in ("width", "height") and parent == "size":
            if "object" not in stack:
                setattr(annotation, tag, _number(path, parser.CurrentLineNumber, tag, value, int))
        elif tag == "object":
            _add_object(path, obj_line, obj, annotation)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise DataFormatError(path, exc.lineno, f"malformed xml: {expat.ErrorString(exc.code)}") from None
    return annotation  # only reached if the fast path failed on something this parser accepts


def _add_object(path: Path, line: int, obj: dict[str, str], annotation: VocAnnotation) -> None:
    name = obj.get("name")
    if not name:
        raise DataFormatError(path, line, "<object> without a <name>")
    missing = [c for c in _COORDS if c not in obj]
    if missing:
        raise DataFormatError(path, line, f"<object> {name!r} lacks bndbox field(s) {', '.join(missing)}")
    coords = {c: _number(path, int(obj[f"{c}@line"]), c, obj[c], float) for c in _COORDS}
    try:
        box = Box(**coords)
    except ValidationError as exc:
        message = "; ".join(err["msg"] for err in exc.errors())
        raise DataFormatError(path, line, f"bad box for {name!r}: {message}") from None
    annotation.boxes.setdefault(name, []).append(box)


def _number(path: Path, line: int, tag: str, value: str, kind: type) -> float | int:
    try:
        return kind(float(value)) if kind is int else kind(value)
    except ValueError:
        raise DataFormatError(path, line, f"<{tag}> is {value!r}, not a number") from None


class VocIndex:
    """Lazy map image id -> `VocAnnotation`, listing the folder once and parsing files on demand.

    A missing file means "no groundable entity in this tweet" (GMNER convention), not an error.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        try:
            self._names = {n[:-4] for n in os.listdir(self.folder) if n.endswith(".xml")}
        except FileNotFoundError:
            raise DataFormatError(self.folder, None, "xml folder not found") from None

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._names

    def get(self, image_id: str) -> VocAnnotation | None:
        if image_id not in self._names:
            return None
        return read_voc(os.path.join(self.folder, f"{image_id}.xml"))
