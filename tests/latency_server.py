"""An OpenAI-compatible test server that stands in for one GPU model replica: every request holds
one of `slots` concurrent slots for `latency_s` seconds (a replica's batch capacity and its
per-request time), then answers deterministically from the prompt. Used by the distributed tests
and the scaling benchmark, where what is measured is how well many replicas are kept busy, not
how fast a model is. Counts the requests it answered and the peak concurrency it saw.

Answers: a completion prompt ending in the `extract` few-shot format gets the first capitalised
word of its last `Tweet:` as a PER entity (or `none`); a chat request gets `{"entities": []}`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "latency-sim"
_LAST_TWEET = re.compile(r"Tweet: (.*)\n(?:Context: .*\n)?Entities:\s*$")
_CAPITALISED = re.compile(r"\b([A-Z][a-z]{2,})\b")


def completion_answer(prompt: str) -> str:
    match = _LAST_TWEET.search(prompt)
    word = _CAPITALISED.search(match.group(1)) if match else None
    return f"{word.group(1)} (PER)" if word else "none"


class LatencyServer:
    def __init__(self, latency_s: float = 0.2, slots: int = 4, port: int = 0):
        self.latency_s = latency_s
        self.slots = threading.BoundedSemaphore(slots)
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        # The window in which this replica served (first request started, last one answered).
        self.first_start: float | None = None
        self.last_end: float | None = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send({"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                elif self.path.rstrip("/").endswith("/stats"):  # read and reset the serving window
                    with server._lock:
                        stats = {"requests": server.requests, "first_start": server.first_start,
                                 "last_end": server.last_end}
                        server.first_start = server.last_end = None
                    self._send(stats)
                else:
                    self.send_error(404)

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server.slots:  # a replica serves `slots` requests at once; the rest queue
                    with server._lock:
                        server.first_start = server.first_start or time.time()
                        server.in_flight += 1
                        server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                    time.sleep(server.latency_s)
                    with server._lock:
                        server.in_flight -= 1
                        server.requests += 1
                        server.last_end = time.time()
                usage = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
                if self.path.endswith("/chat/completions"):
                    message = {"role": "assistant", "content": json.dumps({"entities": []})}
                    self._send({"id": "x", "object": "chat.completion", "model": MODEL, "usage": usage,
                                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
                else:
                    text = completion_answer(str(request.get("prompt", "")))
                    self._send({"id": "x", "object": "text_completion", "model": MODEL, "usage": usage,
                                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "LatencyServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "LatencyServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """`python tests/latency_server.py --replicas N`: serve N replicas in their own process (so a
    benchmark's client does not share a GIL with them); prints their base URLs as one JSON line and
    serves until stdin closes."""
    import argparse
    import sys

    p = argparse.ArgumentParser()
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--slots", type=int, default=4)
    args = p.parse_args()
    servers = [LatencyServer(args.latency, args.slots).start() for _ in range(args.replicas)]
    print(json.dumps([s.base_url for s in servers]), flush=True)
    sys.stdin.read()
    for server in servers:
        server.stop()


if __name__ == "__main__":
    main()
