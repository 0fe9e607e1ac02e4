"""The gateway's ASGI front: `/v1/stream` sockets go straight to their handler, everything else
(/healthz, /readyz, /metrics) through FastAPI.

Why: FastAPI's routing, exception middlewares and per-request exit stacks live as long as the
request, and a socket's request lives for hours. Measured with tracemalloc on 1,000 idle sockets
they held ~12 KiB per socket, a quarter of the gateway's memory per idle connection
(bench/RESULTS.md). The handler only needs a Starlette `WebSocket`, so nothing is lost.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.websockets import WebSocket

STREAM_PATH = "/v1/stream"


class DirectStream:
    def __init__(self, app: FastAPI, path: str = STREAM_PATH) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == self.path:
            # Set by the app's lifespan (the handler needs the hub); until then FastAPI answers.
            endpoint = getattr(self.app.state, "stream_endpoint", None)
            if endpoint is not None:
                scope.setdefault("app", self.app)
                await endpoint(WebSocket(scope, receive, send))
                return
        await self.app(scope, receive, send)
