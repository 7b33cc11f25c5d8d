"""A small HTTP/1.1 server on asyncio streams for the sandbox's endpoints.

Written for the sandbox rather than taken from a framework because fault injection needs control a
framework hides: stopping the listener so connections are refused, dropping live keep-alive
connections, or accepting a request and never answering it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 64 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def text(cls, value: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(status, value.encode(), {"Content-Type": content_type})


Handler = Callable[[Request], Awaitable[Response]]


class Listener:
    """One port. `start()` binds, `stop()` unbinds and drops every open connection (so a 'down'
    endpoint refuses new connections and has no keep-alive connection left that still answers)."""

    def __init__(self, host: str, port: int, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.port, reuse_address=True, backlog=1024, ssl=self.ssl_context
            )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                try:
                    response = await self.handler(request)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a handler bug answers 500, the server lives on
                    response = Response.text(f"sandbox handler error: {type(exc).__name__}: {exc}", 500)
                keep_alive = request.headers.get("connection", "").lower() != "close"
                writer.write(_encode(response, keep_alive, head=request.method == "HEAD"))
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise ValueError("request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY:
        raise ValueError("request body too large")
    body = await reader.readexactly(length) if length else b""
    parts = urlsplit(target)
    return Request(method.upper(), parts.path or "/", parse_qs(parts.query), headers, body)


def _encode(response: Response, keep_alive: bool, head: bool) -> bytes:
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Unknown"
    headers = {"Content-Length": str(len(response.body)), **response.headers}
    headers["Connection"] = "keep-alive" if keep_alive else "close"
    out = [f"HTTP/1.1 {response.status} {reason}"]
    out += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + (b"" if head else response.body)
