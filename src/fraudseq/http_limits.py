"""Slow and oversized request headers: the HTTP protocol `fraudseq serve` runs uvicorn with.

uvicorn has no read timeout. Its ``timeout_keep_alive`` only closes a connection idle
*between* requests; a client that connects and sends nothing, or sends part of its request
headers and then nothing (slowloris), holds the connection (and a file descriptor) forever,
and the headers of one request may grow without bound (12.5 MB of one header line were
accepted). :class:`LimitedHttpToolsProtocol` is uvicorn's httptools protocol with:

- a header deadline: from the connection's start, or the first byte of a request on a
  kept-alive connection, the request's headers must be complete within ``header_timeout``
  seconds; otherwise the client gets ``408 Request Timeout`` and the connection is closed;
- a header size limit: more than ``max_header_bytes`` before the end of the headers gets
  ``431 Request Header Fields Too Large`` and the connection is closed.

The body has its own deadline in the app (``create_app(body_timeout=...)``, an ASGI
middleware), so it also holds under any server. Pass ``http=protocol(...)`` to uvicorn.

This module is outside ``fraudseq.serving`` on purpose: uvicorn's worker processes unpickle
their configuration, this protocol included, before they answer the supervisor's health
check, and importing ``fraudseq.serving`` (torch, the model code) took longer than the 5 s
it allows, so workers were killed and restarted in a loop.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "HEADER_TIMEOUT_SECONDS",
    "MAX_HEADER_BYTES",
    "LimitedHttpToolsProtocol",
    "protocol",
]

log = logging.getLogger("fraudseq.serving")

#: Seconds a client has to send a request's headers (nginx: client_header_timeout 60 s).
HEADER_TIMEOUT_SECONDS = 10.0
#: Request line and headers, in bytes (nginx: 4 buffers of 8 KiB for large headers).
MAX_HEADER_BYTES = 64 * 1024


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a header size limit."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        max_header_bytes: int = MAX_HEADER_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self._header_timer = None
        self._awaiting_headers = False
        self._header_bytes = 0

    # -- the deadline --------------------------------------------------------------------
    def _await_headers(self) -> None:
        self._awaiting_headers, self._header_bytes = True, 0
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _headers_done(self) -> None:
        self._awaiting_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            log.debug(
                "%s: request headers not complete after %ss", self.client, self.header_timeout
            )
            self._refuse(
                408,
                b"Request Timeout",
                f"the request headers were not received within {self.header_timeout:g} s",
            )

    def _refuse(self, status: int, reason: bytes, message: str) -> None:
        body = json.dumps({"message": message}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()

    # -- uvicorn's hooks -----------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()  # a connection that sends nothing is closed too

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            room = self.max_header_bytes - self._header_bytes
            self._header_bytes += len(data)
            if len(data) > room:
                # The bytes within the limit may end the headers and start the body (a
                # large batch often arrives in one read with its headers): parse them first.
                head, data = data[: max(room, 0)], data[max(room, 0) :]
                if head and not self.transport.is_closing():
                    super().data_received(head)
                if self._awaiting_headers:
                    self._headers_done()
                    self._refuse(
                        431,
                        b"Request Header Fields Too Large",
                        f"the request line and headers exceed {self.max_header_bytes} bytes",
                    )
                    return
        if self.transport.is_closing():
            return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # the next request on a kept-alive connection
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_done()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle until the next request: uvicorn's keep-alive timeout applies; the header
        # deadline starts again with the next request's first byte (on_message_begin).
        self._awaiting_headers, self._header_bytes = True, 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)


def protocol(
    header_timeout: float = HEADER_TIMEOUT_SECONDS, max_header_bytes: int = MAX_HEADER_BYTES
) -> functools.partial:
    """What to pass as uvicorn's ``http``: the limited protocol with these settings (a
    partial of a module-level class, so it pickles into uvicorn's worker processes)."""
    if header_timeout <= 0:
        raise ValueError(f"header_timeout must be > 0, got {header_timeout}")
    return functools.partial(
        LimitedHttpToolsProtocol, header_timeout=header_timeout, max_header_bytes=max_header_bytes
    )
