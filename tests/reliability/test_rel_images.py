"""Local images stay inside the input's folder unless widened; remote images are guarded."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from mmie_pipe.images import ImageError, ImageOptions, read_image_bytes
from mmie_pipe.pipeline import validate_pipeline
from mmie_pipe.runner import Runner
from stub_tools import register_stub_detector


def jpeg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path, format="JPEG")
    return path


@pytest.fixture
def layout(tmp_path):
    data = tmp_path / "data"
    jpeg(data / "img" / "ok.jpg")
    jpeg(tmp_path / "secret" / "outside.jpg")
    (data / "img" / "leak.jpg").symlink_to(tmp_path / "secret" / "outside.jpg")
    (data / "img" / "inside-link.jpg").symlink_to(data / "img" / "ok.jpg")
    return tmp_path, data


def refs(tmp_path, data):
    outside = tmp_path / "secret" / "outside.jpg"
    return {
        "dotdot": ("../secret/outside.jpg", False),
        "dotdot inside": ("img/../img/ok.jpg", True),
        "absolute outside": (str(outside), False),
        "absolute inside": (str(data / "img" / "ok.jpg"), True),
        "file url outside": (outside.as_uri(), False),
        "file url inside": ((data / "img" / "ok.jpg").as_uri(), True),
        "symlink leaving": ("img/leak.jpg", False),
        "symlink inside": ("img/inside-link.jpg", True),
        "relative": ("img/ok.jpg", True),
        "system file": ("/etc/hostname", False),
    }


def test_confinement_twins(layout):
    tmp_path, data = layout
    options = ImageOptions(image_root=str(data))
    for name, (ref, allowed) in refs(tmp_path, data).items():
        if allowed:
            assert read_image_bytes(ref, options).data[:2] == b"\xff\xd8", name
        else:
            with pytest.raises(ImageError, match="outside the image folder"):
                read_image_bytes(ref, options)


def test_image_root_widens_the_root(layout):
    tmp_path, data = layout
    assert read_image_bytes(str(tmp_path / "secret" / "outside.jpg"), ImageOptions(image_root=str(tmp_path))).data


def test_data_urls_are_decoded_and_bad_ones_refused(tmp_path):
    raw = jpeg(tmp_path / "a.jpg").read_bytes()
    url = "data:image/jpeg;base64," + base64.b64encode(raw).decode()
    assert read_image_bytes(url).data == raw
    for bad, why in [("data:image/jpeg;base64,@@@", "not valid base64"), ("data:text/plain,hello", "must be base64"),
                     ("data:image/png;base64,", "empty")]:
        with pytest.raises(ImageError, match=why):
            read_image_bytes(bad)


def test_in_a_run_images_resolve_against_the_input_folder_and_outputs_keep_the_reference(layout):
    tmp_path, data = layout
    posts = [
        {"id": "in", "text": "Hello Paris", "image": "img/ok.jpg"},
        {"id": "out", "text": "Hello Rome", "image": "../secret/outside.jpg"},
        {"id": "link", "text": "Hello Oslo", "image": "img/leak.jpg"},
    ]
    (data / "in.jsonl").write_text("\n".join(json.dumps(p) for p in posts) + "\n")
    register_stub_detector()
    raw = {"name": "t", "stages": [{"stage": "objects", "params": {"detector": "stub_boxes"}}],
           "runtime": {"cache_path": str(tmp_path / "c.sqlite")}}
    summary = asyncio.run(Runner(validate_pipeline(raw).config).run(data / "in.jsonl", tmp_path / "out", progress=False))
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "predictions.jsonl").read_text().splitlines())}
    assert summary.ok == 1 and not rows["in"].get("errors")
    assert [r["image"] for r in rows.values()] == [p["image"] for p in posts]  # as given, not absolute
    for rid in ("out", "link"):
        assert rows[rid]["errors"][0]["kind"] == "image" and "outside the image folder" in rows[rid]["errors"][0]["reason"]


class _Server:
    """A loopback HTTP server: /img serves a JPEG, /hop redirects to another host."""

    def __init__(self, body: bytes):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == "/hop":
                    self.send_response(302)
                    self.send_header("Location", "http://example.invalid/x.jpg")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_remote_images_off_private_hosts_need_opt_in_redirects_refused(tmp_path):
    server = _Server(jpeg(tmp_path / "a.jpg").read_bytes())
    try:
        with pytest.raises(ImageError, match="remote images are disabled"):
            read_image_bytes(server.url + "/img")
        with pytest.raises(ImageError, match="private or loopback"):
            read_image_bytes(server.url + "/img", ImageOptions(allow_remote=True))
        with pytest.raises(ImageError, match="private or loopback"):
            read_image_bytes(server.url.replace("127.0.0.1", "localhost") + "/img", ImageOptions(allow_remote=True))
        opted = ImageOptions(allow_remote=True, allow_private_hosts=True)
        assert read_image_bytes(server.url + "/img", opted).data[:2] == b"\xff\xd8"
        with pytest.raises(ImageError, match="redirected to http://example.invalid"):
            read_image_bytes(server.url + "/hop", opted)
    finally:
        server.close()
