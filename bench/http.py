"""A minimal keep-alive HTTP/1.1 client for the load processes: POST JSON, read a Content-Length
answer. httpx spends ~1 ms of CPU per request; on a 2-core machine shared with the system under
test the load generator must cost as little as possible, so it speaks the protocol directly."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class HttpConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post_json(self, path: str, token: str, body: dict[str, Any]) -> tuple[int, bytes, float | None]:
        """(status, body, Retry-After seconds or None)."""
        payload = json.dumps(body, separators=(",", ":")).encode()
        head = (f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\nauthorization: Bearer {token}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n").encode()
        for attempt in (0, 1):  # a keep-alive connection the server closed meanwhile: reopen once
            if self.writer is None:
                await self._open()
            try:
                self.writer.write(head + payload)
                return await self._answer()
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _answer(self) -> tuple[int, bytes, float | None]:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close, retry_after = None, False, None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "retry-after":
                retry_after = float(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length is None:
            raise RuntimeError("answer without content-length")
        body = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, body, retry_after

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class HttpPool:
    """Connections handed out one request at a time; at most `size` open."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.idle: list[HttpConnection] = []
        self.slots = asyncio.Semaphore(size)

    async def post_json(self, path: str, token: str, body: dict[str, Any]) -> tuple[int, bytes, float | None]:
        async with self.slots:
            conn = self.idle.pop() if self.idle else HttpConnection(self.host, self.port)
            try:
                answer = await conn.post_json(path, token, body)
            except BaseException:
                conn.close()
                raise
            self.idle.append(conn)
            return answer

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
