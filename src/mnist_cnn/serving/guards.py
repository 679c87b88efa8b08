"""HTTP guards: security headers on every answer, and the limits uvicorn itself lacks.

* :class:`SecurityHeaders`: ``nosniff`` everywhere, and a Content-Security-Policy on every HTML
  page (:data:`PAGE_CSP` for the drawing page, :func:`docs_csp` for the API docs pages).
* :func:`guarded_protocol`: uvicorn's httptools protocol with a cap on header size (431), read
  timeouts for headers and body (408) and a cap on open connections (503), answered in JSON.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from typing import Any

from mnist_cnn.serving.limits import Limits

log = logging.getLogger("mnist_cnn.server")

# The page only loads its own files; data: URLs are the 28x28 preview images.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)


class SecurityHeaders:
    """Pure ASGI middleware: ``nosniff`` on every answer and a Content-Security-Policy on every HTML
    page (``/``, ``/static/*.html``, ``/docs``, ``/redoc``) that does not set its own."""

    def __init__(self, app: Any, docs_paths: tuple[str, ...] = (), offline_docs: bool = True):
        self.app, self.docs_paths, self.offline_docs = app, set(docs_paths), offline_docs

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope.get("path") in self.docs_paths
        held: list[dict[str, Any]] = []

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-content-type-options"]
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
                names = {k.lower() for k, _ in headers}
                html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
                if html and b"content-security-policy" not in names:
                    if docs:  # the policy depends on the page's inline script: hold the start until the body
                        held.append(message)
                        return
                    headers += [(b"content-security-policy", PAGE_CSP.encode()), (b"x-frame-options", b"DENY")]
            elif held and message["type"] == "http.response.body":
                start = held.pop()  # docs pages come in one piece: else no inline script is allowed
                page = b"" if message.get("more_body") else message.get("body", b"")
                csp = docs_csp(page, self.offline_docs).encode()
                start["headers"] += [(b"content-security-policy", csp), (b"x-frame-options", b"DENY")]
                await send(start)
            await send(message)

        await self.app(scope, receive, wrapped)


def docs_csp(html: bytes, offline: bool = True) -> str:
    """The API docs pages (Swagger UI, ReDoc) run one inline script, allowed by its hash, and style
    themselves with inline styles and a blob: worker; with fastapi-offline everything they load
    comes from this server (without it, from FastAPI's CDN)."""
    hashes = "".join(
        " 'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in _INLINE_SCRIPT.finditer(html)
    )
    cdn = "" if offline else " https://cdn.jsdelivr.net https://fastapi.tiangolo.com"
    return (
        f"default-src 'self'; script-src 'self'{cdn}{hashes}; style-src 'self' 'unsafe-inline'{cdn}; "
        f"img-src 'self' data: blob:{cdn}; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )


# --------------------------------------------------------------------------- the guarded HTTP protocol


def guarded_protocol(limits: Limits) -> Any:
    """uvicorn's httptools protocol plus: request line + headers over ``max_header_bytes`` -> 431;
    headers not complete within ``read_timeout`` of the connection or of the request's first byte,
    a body pausing longer than ``read_timeout`` or not complete within ``body_timeout`` -> 408;
    more than ``max_connections`` open -> 503. Each answer is JSON and closes the connection.
    None when httptools is missing."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.head_bytes = 0  # bytes received of the current request's line and headers
            self.phase = "head"  # "head": waiting for headers; "body": reading it; "": answering
            self.deadline: Any = None
            self.idle: Any = None
            self.last_read = time.monotonic()
            if len(self.connections) > limits.max_connections:
                self.refuse(503, f"too many open connections (limit {limits.max_connections}); retry shortly")
                return
            self.arm(limits.read_timeout, "no complete request headers within {:g} s")

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def arm(self, seconds: float, why: str) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
            self.deadline = self.loop.call_later(seconds, self.refuse, 408, why.format(seconds))

        def disarm(self) -> None:
            for timer in (self.deadline, self.idle):
                if timer is not None:
                    timer.cancel()
            self.deadline = self.idle = None

        def check_idle(self) -> None:
            quiet = time.monotonic() - self.last_read
            if quiet >= limits.read_timeout:
                self.refuse(408, f"the request body paused for more than {limits.read_timeout:g} s")
            else:
                self.idle = self.loop.call_later(limits.read_timeout - quiet, self.check_idle)

        def refuse(self, status: int, message: str) -> None:
            self.disarm()
            if self.transport.is_closing():
                return
            cycle = self.cycle if self.phase == "body" else None
            if cycle is None or not cycle.response_started:  # else the answer is already on its way
                phrase = {408: "Request Timeout", 431: "Request Header Fields Too Large"}.get(status)
                self.transport.write(_raw_answer(status, message, phrase or "Service Unavailable"))
            if cycle is not None:  # the app's receive() sees a disconnect; its own answer is dropped
                cycle.disconnected = True
                cycle.message_event.set()
            log.info("closing connection from %s: %s %s", self.client, status, message)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            self.last_read = time.monotonic()
            if self.phase != "body":
                self.head_bytes += len(data)
            super().data_received(data)
            if self.phase != "body" and self.head_bytes > limits.max_header_bytes:
                self.refuse(431, f"request line and headers exceed {limits.max_header_bytes:,} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self.phase == "":  # the next request on a kept-alive connection: its headers are due
                self.phase = "head"
                self.arm(limits.read_timeout, "no complete request headers within {:g} s")

        def on_headers_complete(self) -> None:
            size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
            if size > limits.max_header_bytes:  # it all came in one read
                self.refuse(431, f"request line and headers exceed {limits.max_header_bytes:,} bytes")
                return
            self.phase, self.head_bytes = "body", 0
            super().on_headers_complete()
            self.arm(limits.body_timeout, "the request body was not complete within {:g} s")
            self.idle = self.loop.call_later(limits.read_timeout, self.check_idle)

        def on_body(self, body: bytes) -> None:
            if not self.transport.is_closing():  # refused in this very read: the rest is not for anyone
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self.transport.is_closing():
                return
            self.disarm()
            self.phase, self.head_bytes = "", 0
            super().on_message_complete()

    return GuardedHttpToolsProtocol


def _raw_answer(status: int, message: str, phrase: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        + ("retry-after: 1\r\n" if status == 503 else "")
        + "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
