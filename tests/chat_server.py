"""A real OpenAI-compatible chat-completions server on loopback, with injectable faults.

Tests use it instead of mocking the HTTP client: the judge talks to it over a real
socket, and every request is logged so a test can prove what was (or was not) sent.

    with ChatServer() as server:
        server.fault_at(1, Fault.http(429, retry_after=1))      # first request overall
        server.fault_on("durian", Fault.no_rating(), forever=True)  # every request naming "durian"
        ... point a client at server.url ...
        assert len(server.requests) == 3

A normal reply is deterministic: the rating is derived from a hash of the text between
"[The Start of Assistant's Answer]" and "[The End of Assistant's Answer]" (the whole
user message when the markers are absent), written as "<explanation>\\nRating: N",
with usage token counts (about 4 characters per token).

GET /v1/models lists the served models (`models=[...]`, default: `model`); like
llama.cpp's server, GET /v1/models/{id} answers 404. With `models` given, a chat
request naming any other model gets 404 model_not_found, as OpenAI answers for a
model that was shut down.

Run it by hand with `python tests/chat_server.py --port 8000` (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

START = "[The Start of Assistant's Answer]"
END = "[The End of Assistant's Answer]"


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour. Build with the class methods below."""

    kind: str  # http | bad_json | no_rating | brackets | slow | drop
    status: int = 200
    retry_after: float | None = None
    delay: float = 0.0

    @classmethod
    def http(cls, status: int, retry_after: float | None = None) -> Fault:
        """An error status with a JSON error body (and a Retry-After header if given)."""
        return cls("http", status=status, retry_after=retry_after)

    @classmethod
    def bad_json(cls) -> Fault:
        """Status 200, content type JSON, but the body is not JSON."""
        return cls("bad_json")

    @classmethod
    def no_rating(cls) -> Fault:
        """A well-formed completion whose text carries no rating."""
        return cls("no_rating")

    @classmethod
    def brackets(cls) -> Fault:
        """A well-formed completion that gives the (normal) rating as "[[N]]"."""
        return cls("brackets")

    @classmethod
    def slow(cls, delay: float) -> Fault:
        """Wait `delay` seconds, then answer normally (a client time-out fires first)."""
        return cls("slow", delay=delay)

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the connection without any response."""
        return cls("drop")


def answer_block(user_text: str) -> str:
    """The text between the answer markers, or the whole message without them."""
    start, end = user_text.find(START), user_text.find(END)
    if start < 0 or end < start:
        return user_text.strip()
    return user_text[start + len(START):end].strip()


def rating_for(text: str) -> int:
    """The deterministic rating (1-10) the server gives to an answer block."""
    return 1 + int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 10


def _user_text(body) -> str:
    try:
        return "\n".join(m["content"] for m in body["messages"] if m.get("role") == "user")
    except (TypeError, KeyError):
        return ""


class ChatServer:
    """POST /v1/chat/completions on 127.0.0.1 (random port) in a background thread."""

    def __init__(self, model: str = "fake-judge", host: str = "127.0.0.1", port: int = 0,
                 models: list[str] | None = None):
        self.model = model
        self.models = list(models) if models is not None else None  # None: any model name is answered
        self.requests: list[dict] = []  # one entry per chat request, in arrival order
        self.listings: list[str] = []  # paths of GET requests (model listings)
        self._by_count: dict[int, Fault] = {}
        self._by_content: list[list] = []  # [substring, faults left, forever]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests ever handled at once

    # ------------------------------------------------------------ plan
    def fault_at(self, n: int, fault: Fault) -> ChatServer:
        """The n-th request overall (1-based) gets `fault`."""
        self._by_count[n] = fault
        return self

    def fault_on(self, substring: str, *faults: Fault, forever: bool = False) -> ChatServer:
        """Requests whose user message contains `substring` get `faults`, one per request
        in order (then normal replies); with forever=True the single fault never runs out."""
        if forever and len(faults) != 1:
            raise ValueError("forever=True takes exactly one fault")
        self._by_content.append([substring, list(faults), forever])
        return self

    def _pick_fault(self, n: int, user_text: str) -> Fault | None:
        if n in self._by_count:
            return self._by_count[n]
        for rule in self._by_content:
            substring, faults, forever = rule
            if substring in user_text and faults:
                return faults[0] if forever else faults.pop(0)
        return None

    # ------------------------------------------------------------ replies
    def reply_text(self, user_text: str, brackets: bool = False) -> str:
        block = answer_block(user_text)
        rating = rating_for(block)
        explanation = f"The answer has {len(block.split())} words and addresses the question."
        return f"{explanation} [[{rating}]]" if brackets else f"{explanation}\nRating: {rating}"

    def completion(self, body: dict, text: str) -> dict:
        prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": len(text) // 4 + 1,
                      "total_tokens": prompt_chars // 4 + len(text) // 4 + 2},
        }

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ChatServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a slow fault
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def count(self, substring: str) -> int:
        """How many requests so far had `substring` in their user message."""
        return sum(substring in r["user_text"] for r in self.requests)


def _handler_for(server: ChatServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_POST(self):
            with server._lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._handle_post()
            finally:
                with server._lock:
                    server.in_flight -= 1

        def do_GET(self):  # not in server.requests: fault plans and request counts are about chat calls
            with server._lock:
                server.listings.append(self.path)
            if self.path.rstrip("/").endswith("/models"):
                served = server.models if server.models is not None else [server.model]
                return self._send(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "test"} for name in served]})
            return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def _handle_post(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            user_text = _user_text(body)
            with server._lock:
                n = len(server.requests) + 1
                fault = server._pick_fault(n, user_text) if self.path.endswith("/chat/completions") else None
                server.requests.append({
                    "n": n, "time": time.monotonic(), "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body, "user_text": user_text, "fault": fault.kind if fault else None,
                    "status": fault.status if fault and fault.kind == "http" else None,
                })
            if not self.path.endswith("/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            if body is None or "messages" not in body:
                return self._send(400, {"error": {"message": "body must be JSON with messages", "type": "invalid"}})
            if server.models is not None and body.get("model") not in server.models:
                return self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist",
                                                  "type": "invalid_request_error", "code": "model_not_found"}})
            self._answer(body, user_text, fault)

        def _answer(self, body, user_text, fault):
            if fault is None:
                return self._send(200, server.completion(body, server.reply_text(user_text)))
            if fault.kind == "http":
                headers = {"Retry-After": _fmt(fault.retry_after)} if fault.retry_after is not None else {}
                error = {"error": {"message": f"injected {fault.status}", "type": "injected", "code": None}}
                return self._send(fault.status, error, headers)
            if fault.kind == "bad_json":
                return self._send_raw(200, b"<html>upstream exploded</html>", "application/json")
            if fault.kind == "no_rating":
                return self._send(200, server.completion(body, "I cannot decide how good this answer is."))
            if fault.kind == "brackets":
                return self._send(200, server.completion(body, server.reply_text(user_text, brackets=True)))
            if fault.kind == "slow":
                if server._stopping.wait(fault.delay):
                    return None
                return self._send(200, server.completion(body, server.reply_text(user_text)))
            if fault.kind == "drop":
                self.close_connection = True
                return None
            raise ValueError(f"unknown fault kind {fault.kind!r}")

        def _send(self, status, obj, headers=None):
            self._send_raw(status, json.dumps(obj).encode("utf-8"), "application/json", headers)

        def _send_raw(self, status, payload, content_type, headers=None):
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (time-out); nothing to do

    return Handler


def _fmt(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="fake-judge")
    args = parser.parse_args(argv)
    server = ChatServer(model=args.model, port=args.port).start()
    print(f"serving {server.url} (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
