"""The outer ASGI layer: body-size and concurrency limits, bearer-key auth, and per-request metrics.

It sits in front of FastAPI so a request over a limit is refused before its body is parsed: a too-large
body is refused as soon as it passes the limit while streaming in (413, with or without a Content-Length),
and a request past `max_concurrent_requests` gets 429 at once instead of queueing. Keys are compared with
`hmac.compare_digest` against every configured key, so the time taken does not depend on how much of a key
matched; a key is never logged or echoed. /health, /ready, /metrics and the OpenAPI docs are open;
everything else needs a key unless the config allows unauthenticated use.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable

from routerank.serve.metrics import Metrics

OPEN_PATHS = ("/health", "/ready", "/metrics", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")
ENDPOINTS = ("/v1/rerank", "/v2/rerank", "/v1/route", "/v1/search", *OPEN_PATHS)

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def error_body(code: int, message: str) -> bytes:
    """The JSON error body every refusal carries, `{"message": ..., "code": ...}`, as bytes."""
    return json.dumps({"message": message, "code": code}).encode()


async def send_error(send: Send, code: int, message: str, headers: list | None = None) -> None:
    """Answer an ASGI request with `code` and the JSON error body, plus any extra headers."""
    body = error_body(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def key_matches(presented: str, keys: list[bytes]) -> bool:
    """True when the presented key equals any configured key; every key is compared, in constant time each."""
    given = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    return matched


class Guard:
    """The ASGI middleware in front of the app: it checks the bearer key, the body size and the number of requests
    in flight before the app sees a request, and records every request's status and latency in `metrics`."""

    def __init__(self, app, *, metrics: Metrics, keys: list[str], max_body_bytes: int, max_concurrent: int):
        self.app, self.metrics = app, metrics
        self.keys = [k.encode() for k in keys]
        self.max_body_bytes, self.max_concurrent = max_body_bytes, max_concurrent
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        start, status = time.perf_counter(), [500]

        async def send_tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_tracked, path)
        finally:
            self.metrics.observe(endpoint, status[0], time.perf_counter() - start)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.keys:
            auth = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, token = auth.partition(" ")
            if not auth:
                await send_error(
                    send,
                    401,
                    "missing API key: send the header 'Authorization: Bearer <key>'",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            if scheme.lower() != "bearer" or not key_matches(token.strip(), self.keys):
                await send_error(
                    send,
                    401,
                    "invalid API key: check the key you send as 'Authorization: Bearer <key>'",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await send_error(
                send,
                413,
                f"request body is {int(declared):,} bytes; the limit is "
                f"{self.max_body_bytes:,}: send fewer or shorter documents per request",
            )
            return
        if self.in_flight >= self.max_concurrent:
            await send_error(
                send,
                429,
                f"too many concurrent requests (limit {self.max_concurrent}): "
                "retry after a moment, or send fewer requests at once",
                [(b"retry-after", b"1")],
            )
            return
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            body = await self._read_body(receive)
            if body is None:
                await send_error(
                    send,
                    413,
                    f"request body is over the limit of {self.max_body_bytes:,} bytes: "
                    "send fewer or shorter documents per request",
                )
                return
            replayed = [False]

            async def replay() -> dict:
                if not replayed[0]:
                    replayed[0] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (the rest is never buffered)."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return bytes(body)
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return None
            if not message.get("more_body"):
                return bytes(body)
