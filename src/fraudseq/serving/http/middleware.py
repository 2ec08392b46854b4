"""The ASGI middlewares around the app: request metrics, the API key, the body limits.

API key: with ``api_key`` set, every route except /healthz, /readyz and the documentation
(/docs, /redoc, /openapi.json) needs it in ``X-API-Key``, compared with
``hmac.compare_digest``; /metrics too. The documentation is open because the docs page
loads /openapi.json with no way to send a key (it was a blank page), and the document
holds no secret: it is the request format every client must know. Every route that acts
on data or reveals state keeps the key.

Body limits: 413 for a body above the limit (checked on Content-Length before reading, or
while reading a chunked body), 408 for a body not received within ``body_timeout`` seconds
of the headers (then the connection is closed).
"""

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable

from fraudseq.serving.http.errors import error_body
from fraudseq.serving.http.metrics import Metrics
from fraudseq.serving.http.settings import BODY_TIMEOUT_SECONDS

__all__ = [
    "API_KEY_HEADER",
    "OPEN_ROUTES",
    "ApiKeyMiddleware",
    "BodyLimitMiddleware",
    "MetricsMiddleware",
]

log = logging.getLogger("fraudseq.serving")

API_KEY_HEADER = "X-API-Key"
#: Routes that never need the API key: the probes (load balancers and orchestrators call
#: them) and the documentation, which the docs page loads without a key.
OPEN_ROUTES = frozenset(
    {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


async def _send_json(send: Callable, status: int, body: dict, headers=()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class MetricsMiddleware:
    """Counts requests by route template and status, and times them (outermost)."""

    def __init__(self, app, metrics: Metrics, routes: frozenset[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            path = scope["path"]
            route = path if path in self.routes else "other"
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)


class ApiKeyMiddleware:
    """Requires the key in X-API-Key on every route but the health probes (constant time)."""

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode("utf-8")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_ROUTES:
            await self.app(scope, receive, send)
            return
        provided = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                provided = value
                break
        if provided is None:
            message = f"missing {API_KEY_HEADER} header: this server requires an API key"
        elif not hmac.compare_digest(provided, self.key):
            message = f"invalid API key in the {API_KEY_HEADER} header"
        else:
            await self.app(scope, receive, send)
            return
        await _send_json(
            send, 401, error_body(message), [(b"www-authenticate", API_KEY_HEADER.encode())]
        )


class BodyLimitMiddleware:
    """413 for a body above `max_bytes`, decided before the body is parsed; 408 for a body
    not received whole within `timeout` seconds of the request's headers (uvicorn has no
    read timeout: a stalled upload would hold its connection forever). The body is read
    here, under both limits, and replayed to the app."""

    def __init__(self, app, max_bytes: int, timeout: float = BODY_TIMEOUT_SECONDS) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    def _too_large(self, size: int | None) -> dict:
        got = f"of {size} bytes " if size is not None else ""
        return error_body(
            f"request body {got}is larger than the limit of {self.max_bytes} bytes; "
            f"send fewer transactions per request"
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = chunked = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = value
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                await _send_json(send, 400, error_body("invalid Content-Length header"))
                return
            if size > self.max_bytes:
                await _send_json(send, 413, self._too_large(size))
                return
        elif chunked is None and scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)  # no body
            return
        # Read the body up to the limit and within the deadline, then replay it to the app.
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await _send_json(send, 413, self._too_large(None))
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            log.debug("request body incomplete after %ss (%d bytes)", self.timeout, size)
            message = (
                f"the request body was not received within {self.timeout:g} s "
                f"({size} bytes arrived)"
            )
            await _send_json(send, 408, error_body(message), [(b"connection", b"close")])
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
