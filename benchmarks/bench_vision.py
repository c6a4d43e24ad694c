"""Objects + OCR throughput on CPU (images/s), cold and from the cache, through the real runner.

    .venv/bin/python benchmarks/bench_vision.py [--images 100] [--ocr-fast] [--workdir DIR]

Images: the real photos in the scikit-image and matplotlib wheels (astronaut, cat, coffee, rocket,
motorcycle, Grace Hopper...) plus rendered street signs, augmented (crop, scale to a 480-1024 px
long side, mirror, JPEG quality) so that every one of the N files has distinct bytes. "cold" runs
the detector and OCR on every image with an empty cache; "cached" is a second run of the same
pipeline (new output directory, same cache), where each image is only read and hashed. Both
times include loading the models and hashing their weights once (`setup_s`, measured alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmie_pipe.pipeline import validate_pipeline  # noqa: E402
from mmie_pipe.runner import Runner  # noqa: E402

SIGNS = ["Welcome to Berlin", "Paris Marathon 2024", "OPEN 24 HOURS", "Manchester United", "Vote Smith for Mayor"]


def source_photos() -> list[Path]:
    import matplotlib
    import skimage

    sk = Path(skimage.__file__).parent / "data"
    mpl = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg", "coins.png"]
    return [sk / n for n in names if (sk / n).is_file()] + [p for p in (mpl / "grace_hopper.jpg",) if p.is_file()]


def sign(text: str, rng: random.Random):
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"), 56)
    img = Image.new("RGB", (900, 600), tuple(rng.randint(150, 255) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    draw.rectangle((60, 200, 840, 380), fill=(20, 60, 140))
    draw.text((90, 255), text, fill="white", font=font)
    return img


def make_images(directory: Path, count: int, seed: int = 0) -> list[Path]:
    from PIL import Image, ImageOps

    rng = random.Random(seed)
    bases = [Image.open(p).convert("RGB") for p in source_photos()] + [sign(t, rng) for t in SIGNS]
    paths = []
    for i in range(count):
        img = bases[i % len(bases)]
        w, h = img.size
        keep = rng.uniform(0.8, 1.0)
        x0, y0 = rng.randint(0, int(w * (1 - keep))), rng.randint(0, int(h * (1 - keep)))
        img = img.crop((x0, y0, x0 + int(w * keep), y0 + int(h * keep)))
        scale = rng.randint(480, 1024) / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        if rng.random() < 0.5 and i % len(bases) < len(bases) - len(SIGNS):
            img = ImageOps.mirror(img)  # mirrored text would not be text any more
        path = directory / f"img{i:03d}.jpg"
        img.save(path, format="JPEG", quality=rng.randint(80, 95))
        paths.append(path)
    return paths


def pipeline(cache_path: Path, stages: list[str], ocr_fast: bool) -> dict:
    ocr_params = {"engine_options": {"det_limit_type": "max", "det_limit_side_len": 960}} if ocr_fast else {}
    specs = {"objects": {"stage": "objects"}, "ocr": {"stage": "ocr", "params": ocr_params}}
    return {
        "name": "bench-vision",
        "stages": [specs[s] for s in stages],
        "runtime": {"cache_path": str(cache_path), "batch_size": 8},
    }


def timed_run(raw: dict, inputs: Path, out: Path) -> tuple[float, dict]:
    report = validate_pipeline(raw)
    assert report.ok, report.problems
    started = time.perf_counter()
    summary = asyncio.run(Runner(report.config).run(inputs, out, progress=False))
    seconds = time.perf_counter() - started
    assert summary.errors == 0, summary.as_dict()
    return seconds, summary.as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--ocr-fast", action="store_true", help="OCR text detection at max side 960 instead of min side 736")
    parser.add_argument("--stages", default="objects,ocr", help="comma list out of objects, ocr")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-vision-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "images").mkdir(exist_ok=True)
    images = make_images(work / "images", args.images)
    inputs = work / "posts.jsonl"
    inputs.write_text("".join(json.dumps({"id": p.stem, "text": "post", "image": str(p)}) + "\n" for p in images))
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    cache = work / "cache.sqlite"
    for leftover in work.glob("cache.sqlite*"):
        leftover.unlink()
    raw = pipeline(cache, stages, args.ocr_fast)
    empty = work / "empty.jsonl"
    empty.write_text("")
    setup, _ = timed_run(raw, empty, work / "run-setup")  # model loading + weight hashing only
    cold, _ = timed_run(raw, inputs, work / "run-cold")
    warm, _ = timed_run(raw, inputs, work / "run-cached")
    objects = [json.loads(x) for x in (work / "run-cold" / "predictions.jsonl").read_text().splitlines()]
    result = {
        "images": len(images),
        "stages": stages,
        "ocr": "max side 960" if args.ocr_fast else "min side 736 (engine default)",
        "setup_s": round(setup, 2),
        "cold_s": round(cold, 2),
        "cold_images_per_s": round(len(images) / cold, 2),
        "cached_s": round(warm, 2),
        "cached_images_per_s": round(len(images) / warm, 1),
        "objects_found": sum(len(o.get("objects", [])) for o in objects),
        "ocr_lines_found": sum(len(o.get("ocr", [])) for o in objects),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
