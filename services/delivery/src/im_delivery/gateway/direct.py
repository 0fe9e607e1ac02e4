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
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

STREAM_PATH = "/v1/stream"


class DirectStream:
    def __init__(self, app: FastAPI, path: str = STREAM_PATH) -> None:
        self.app = app
        self.path = path
        self._endpoint: Any = None

    def _stream_endpoint(self) -> Any:
        # The route is added by the app's lifespan (it needs the hub): looked up once it exists.
        if self._endpoint is None:
            self._endpoint = _find(self.app.router.routes, self.path)
        return self._endpoint

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == self.path:
            endpoint = self._stream_endpoint()
            if endpoint is not None:
                scope.setdefault("app", self.app)
                await endpoint(WebSocket(scope, receive, send))
                return
        await self.app(scope, receive, send)


def _find(routes: list[Any], path: str) -> Any:
    """The endpoint of the WebSocket route at `path`, also inside included routers (FastAPI keeps
    an included router as one route wrapping the original router)."""
    for route in routes:
        if isinstance(route, WebSocketRoute) and route.path == path:
            return route.endpoint
        inner = getattr(route, "original_router", None)
        found = _find(inner.routes, path) if inner is not None else None
        if found is not None:
            return found
    return None
