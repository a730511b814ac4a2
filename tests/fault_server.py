"""A local OpenAI-compatible server for tests: replies come from the fake backend (so a run through it
must equal a fake-backend run), and a deterministic share of requests fails first: HTTP 500, HTTP 429
with Retry-After, a body that is not JSON, or a reply slower than the client's timeout."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gra_stream.backends import ChatRequest
from gra_stream.backends.fake import FakeBackend


class FaultServer:
    def __init__(self, *, faults: bool = True, slow_s: float = 1.5):
        self.faults = faults
        self.slow_s = slow_s
        self.injected: Counter = Counter()
        self.requests = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    n = server.requests
                fault = server.fault_for(n)
                if fault:
                    with server.lock:
                        server.injected[fault] += 1
                if fault == "http_500":
                    return self._send(500, b'{"error": "boom"}')
                if fault == "http_429":
                    return self._send(429, b'{"error": "slow down"}', {"Retry-After": "0.05"})
                if fault == "garbage":
                    return self._send(200, b"<html>proxy error</html>")
                if fault == "slow":
                    time.sleep(server.slow_s)
                schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
                request = ChatRequest(tuple(body["messages"]), schema, body["max_tokens"], body["temperature"],
                                      body["top_p"], body["seed"])
                done = FakeBackend(body["model"]).complete([request])[0]
                reply = {"choices": [{"message": {"role": "assistant", "content": done.text},
                                      "finish_reason": done.finish_reason}],
                         "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens}}
                try:
                    self._send(200, json.dumps(reply).encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow reply

            def _send(self, code, payload, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def fault_for(self, n: int) -> str:
        if not self.faults:
            return ""
        for every, fault in ((7, "http_500"), (11, "http_429"), (13, "garbage"), (29, "slow")):
            if n % every == 0:
                return fault
        return ""

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
