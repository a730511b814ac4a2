"""A local OpenAI-compatible server for tests and benchmarks: replies come from the fake backend (so a run
through it must equal a fake-backend run), and a deterministic share of requests fails first: HTTP 500,
HTTP 429 with Retry-After, a body that is not JSON, or a reply slower than the client's timeout.

Like a hosted provider it can also require a bearer token (a wrong one gets 401 with the key quoted back,
as some providers do) and enforce a fixed request rate (a token bucket: over it, 429 with Retry-After)."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gra_stream.backends import ChatRequest
from gra_stream.backends.fake import FakeBackend
from gra_stream.backends.openai_http import SCHEMA_IN_PROMPT


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a client with many requests in flight connects all at once


class FaultServer:
    def __init__(self, *, faults: bool = True, slow_s: float = 1.5, api_key: str = "", rate_per_s: float = 0.0,
                 burst: float = 1.0, latency_s: float = 0.0, port: int = 0, reject=None, wrap=None, refuse=None,
                 route: str = "/v1/chat/completions", key_header: str = "Authorization"):
        self.faults = faults
        self.route = route              # the path and query it answers; others get 404 (Azure's has ?api-version=)
        self.key_header = key_header    # "Authorization" (a bearer token) or "api-key", as Azure OpenAI takes the key
        self.refuse = refuse            # body -> a refusal, sent as OpenAI does (content null), or None to answer it
        self.reject = reject            # body -> the message of an HTTP 400 for it, or None to answer it
        self.wrap = wrap                # (reply text, request number) -> the text sent, as a chatty model words it
        self.down = False               # True: every request gets 503, as from a gateway whose backend is down
        self.error_200 = ""             # set: every request gets HTTP 200 with this error as its body, as some gateways answer
        self.slow_s = slow_s
        self.api_key = api_key
        self.rate_per_s, self.burst, self.latency_s = rate_per_s, burst, latency_s
        self.bucket, self.refilled = burst, time.monotonic()
        self.injected: Counter = Counter()
        self.requests = 0
        self.unauthorized = 0           # requests without the right key
        self.rate_limited = 0           # requests refused for going over rate_per_s
        self.headers_seen: list[dict] = []
        self.bodies: list[str] = []     # every request body, as canonical JSON, in arrival order
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
                    server.headers_seen.append(dict(self.headers))
                    server.bodies.append(json.dumps(body, sort_keys=True))
                if self.path != server.route:
                    return self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
                if server.down:
                    return self._send(503, b'{"error": {"message": "no healthy upstream"}}')
                if server.error_200:
                    return self._send(200, json.dumps({"error": {"message": server.error_200, "code": 502}}).encode())
                rejected = server.reject(body) if server.reject else None
                if rejected:
                    return self._send(400, json.dumps({"error": {"message": rejected, "type": "invalid_request_error",
                                                                 "code": 400}}).encode())
                bearer = server.key_header == "Authorization"
                if server.api_key and self.headers.get(server.key_header) != (f"Bearer {server.api_key}" if bearer
                                                                              else server.api_key):
                    with server.lock:
                        server.unauthorized += 1
                    sent = (self.headers.get(server.key_header) or "").removeprefix("Bearer ")
                    message = f"Incorrect API key provided: {sent}. You can find your API key in your account."
                    return self._send(401, json.dumps({"error": {"message": message}}).encode())
                wait = server.take_token()
                if wait:
                    return self._send(429, b'{"error": {"message": "rate limit reached"}}',
                                      {"Retry-After": f"{wait:.3f}"})
                if server.latency_s:
                    time.sleep(server.latency_s)
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
                asked = body["messages"][-1]["content"]
                if schema is None and SCHEMA_IN_PROMPT in asked:  # structured_output json_object or none
                    schema = json.loads(asked.rsplit(SCHEMA_IN_PROMPT, 1)[1])
                budget = body.get("max_tokens", body.get("max_completion_tokens"))  # the latter: reasoning models
                request = ChatRequest(tuple(body["messages"]), schema, budget, body.get("temperature", 1.0),
                                      body.get("top_p", 1.0), body["seed"])
                done = FakeBackend(body["model"]).complete([request])[0]
                text = server.wrap(done.text, n) if server.wrap else done.text
                refusal = server.refuse(body) if server.refuse else None
                message = {"role": "assistant", "content": None, "refusal": refusal} if refusal else \
                    {"role": "assistant", "content": text}
                reply = {"choices": [{"message": message, "finish_reason": "stop" if refusal else done.finish_reason}],
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

        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def take_token(self) -> float:
        """0 when a request may go ahead under rate_per_s, else the seconds until it could."""
        if not self.rate_per_s:
            return 0.0
        with self.lock:
            now = time.monotonic()
            self.bucket = min(self.burst, self.bucket + (now - self.refilled) * self.rate_per_s)
            self.refilled = now
            if self.bucket >= 1.0:
                self.bucket -= 1.0
                return 0.0
            self.rate_limited += 1
            return (1.0 - self.bucket) / self.rate_per_s

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


if __name__ == "__main__":  # a server in a process of its own, for benchmarks: prints its URL, serves until killed
    import argparse
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=0.0, help="requests per second it accepts (0: any)")
    ap.add_argument("--burst", type=float, default=1.0, help="requests it accepts at once above the rate")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds each reply takes")
    args = ap.parse_args()
    with FaultServer(faults=False, rate_per_s=args.rate, burst=args.burst, latency_s=args.latency) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin
