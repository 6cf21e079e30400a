"""A scripted local HTTP server for the wire's narrow cases (thread, loopback only)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

KEY = "sk-live-0c1d-CLIENT-TEST-KEY-77aa"  # must never appear in a message or log line


def ndjson(tmp_path: Path, rows: int, kind: str = "users", name: str | None = None) -> Path:
    path = tmp_path / (name or f"userpilot-{kind}-{rows}-{time.monotonic_ns()}.ndjson")
    key = "user_id" if kind == "users" else "company_id"
    lines = (json.dumps({key: f"id-{i}", "metadata": {"n": str(i)}}) for i in range(rows))
    path.write_text("".join(line + "\n" for line in lines))
    return path


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.history: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.history.append(self.now)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, str], Any]  # status, headers, JSON-able body (or str) | "drop"


@dataclass
class Script:
    """Answers each request with the first matching scripted reply (or a default)."""

    routes: dict[str, list[Reply | str]] = field(default_factory=dict)
    default: dict[str, Reply] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def reply_for(self, method: str, path: str) -> Reply | str:
        key = f"{method} {path}"
        for route, queue in self.routes.items():
            if key.startswith(route) and queue:
                return queue.pop(0)
        for route, reply in self.default.items():
            if key.startswith(route):
                return reply
        return (404, {}, {"detail": "not found"})


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.seen.append(Seen(self.command, self.path, dict(self.headers), body))
            reply = script.reply_for(self.command, self.path)
            if reply == "drop":
                self.close_connection = True
                self.connection.close()
                return
            assert not isinstance(reply, str)
            status, headers, payload = reply
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve  # noqa: N815
        do_POST = _serve  # noqa: N815
        do_DELETE = _serve  # noqa: N815

    return Handler


@contextmanager
def scripted_server() -> Iterator[Script]:
    script = Script()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    server.daemon_threads = True
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield script
    finally:
        server.shutdown()
        server.server_close()
