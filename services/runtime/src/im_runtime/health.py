"""/healthz, /readyz and /metrics for every service process (HTTP ones and workers alike)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

Check = Callable[[], Awaitable[bool]]


class Readiness:
    """Named readiness checks; ready when every one passes (each bounded by a timeout)."""

    def __init__(self, timeout_s: float = 2.0) -> None:
        self.checks: dict[str, Check] = {}
        self.timeout_s = timeout_s
        self.draining = False

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    async def report(self) -> tuple[bool, dict[str, bool]]:
        async def run(check: Check) -> bool:
            try:
                return bool(await asyncio.wait_for(check(), self.timeout_s))
            except Exception:  # noqa: BLE001
                return False

        names = list(self.checks)
        results = await asyncio.gather(*(run(self.checks[n]) for n in names))
        status = dict(zip(names, results, strict=True))
        if self.draining:
            status["not_draining"] = False
        return all(status.values()), status


def health_router(readiness: Readiness) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is up")
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: Kafka and MongoDB reachable, caches caught up")
    async def readyz(response: Response) -> dict:
        ok, status = await readiness.report()
        response.status_code = 200 if ok else 503
        return {"status": "ready" if ok else "not_ready", "checks": status}

    # Documented as what it serves (Prometheus text), not FastAPI's default JSON.
    @router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={
        200: {"description": "Prometheus text exposition format",
              "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
