"""A small real HTTP proxy for tests: forwards to an upstream server on loopback, injects planned
faults (HTTP status codes) and records how many requests it saw and how many overlapped."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FaultProxy:
    def __init__(self, upstream: str, plan: list[int | None] | None = None, retry_after: str | None = None,
                 echo_headers: bool = False):
        self.upstream = upstream.rstrip("/")
        self.plan = list(plan or [])
        self.retry_after = retry_after
        # Fault bodies quote the request's headers back, as some servers do (Authorization included).
        self.echo_headers = echo_headers
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy._lock:
                    proxy.requests += 1
                    proxy.bodies.append(body)
                    fault = proxy.plan.pop(0) if proxy.plan else None
                    proxy.in_flight += 1
                    proxy.peak_in_flight = max(proxy.peak_in_flight, proxy.in_flight)
                try:
                    if fault is not None:
                        message = "injected fault"
                        if proxy.echo_headers:
                            message += "; request headers: " + "; ".join(
                                f"{k}: {v}" for k, v in sorted(self.headers.items(), key=lambda kv: kv[0].lower() != "authorization"))
                        payload = json.dumps({"error": {"message": message, "type": "test"}}).encode()
                        self.send_response(fault)
                        if proxy.retry_after is not None:
                            self.send_header("Retry-After", proxy.retry_after)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    try:
                        resp = httpx.post(proxy.upstream + self.path, content=body,
                                          headers={"Content-Type": "application/json"}, timeout=120)
                        status, content = resp.status_code, resp.content
                    except httpx.HTTPError:
                        status, content = 502, b'{"error": {"message": "upstream down"}}'
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
