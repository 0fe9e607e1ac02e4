"""Request ids on every response and the request-size limit (Content-Length and streamed body)."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from im_runtime.logs import trace_id
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import error_body
from ..metrics import REQUEST_SECONDS

_GOOD_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _TooLarge(StarletteHTTPException):
    """An HTTPException so FastAPI's body reader re-raises it instead of calling it a parse error."""

    def __init__(self) -> None:
        super().__init__(413, "the request body is too large")


class RequestContext:
    """Pure ASGI middleware: one X-Request-Id per request (taken from the client when sane),
    the trace id for logs and outbox headers, and 413 above `max_bytes`."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _GOOD_ID.match(given) else uuid.uuid4().hex
        token = trace_id.set(request_id)
        started = False
        status = 500
        began = time.perf_counter()

        async def send_with_id(message: dict) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [h for h in message["headers"] if h[0].lower() != b"x-request-id"]
                message["headers"].append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                await self._too_large(send_with_id)
                return
            seen = 0

            async def counted_receive() -> dict:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.max_bytes:
                        raise _TooLarge()
                return message

            try:
                await self.app(scope, counted_receive, send_with_id)
            except _TooLarge:
                if not started:
                    await self._too_large(send_with_id)
        finally:
            trace_id.reset(token)
            # The route template, never the raw path: ids in paths would explode the label set.
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_SECONDS.labels(scope["method"], route, str(status)).observe(time.perf_counter() - began)

    async def _too_large(self, send: Any) -> None:
        body = json.dumps(
            error_body(413, "payload_too_large", f"the request body is larger than {self.max_bytes} bytes", "body")
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
