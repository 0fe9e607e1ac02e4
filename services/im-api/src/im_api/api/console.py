"""The agent console's assets under /console/ (same origin as the API), and the development sign-in.

The assets are Vite's build: hashed file names, so everything but index.html is cached for a year,
and no inline script, so the Content-Security-Policy allows scripts from this origin only. The
WebSocket goes to the delivery gateway, whose origin the policy names (`connect-src`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import jwt
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.staticfiles import StaticFiles

from ..errors import NotFound
from ..settings import ApiSettings
from .deps import DirectoryDep, ServicesDep
from .schemas import errors_doc

TenantId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]
AgentId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@:-]+$")]


def content_security_policy(settings: ApiSettings) -> str:
    stream = urlsplit(settings.stream_public_url)
    # The gateway's origin for the WebSocket (ws/wss as configured; http(s) for its fallbacks).
    gateway = f"{stream.scheme}://{stream.netloc}" if stream.netloc else ""
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        f"connect-src 'self' {gateway}".strip(),
        "img-src 'self' data:",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'self'",
        "form-action 'self'",
    ])


class _ConsoleFiles(StaticFiles):
    """StaticFiles with the console's headers on every answer."""

    def __init__(self, directory: str, csp: str) -> None:
        super().__init__(directory=directory, html=True)
        self.csp = csp

    def file_response(self, full_path, stat_result, scope, status_code=200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        hashed = "/assets/" in str(full_path)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if hashed else "no-cache"
        response.headers["Content-Security-Policy"] = self.csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        return response


def mount_console(app: FastAPI, settings: ApiSettings) -> None:
    """Serves the built console at /console/ when IM_API_CONSOLE_DIR names a built one."""
    directory = Path(settings.console_dir) if settings.console_dir else None
    if directory is None or not (directory / "index.html").is_file():
        return
    app.mount("/console", _ConsoleFiles(str(directory), content_security_policy(settings)), name="console")

    @app.get("/", include_in_schema=False)
    async def to_console() -> RedirectResponse:
        return RedirectResponse("/console/")


def require_dev_signin_safe(settings: ApiSettings) -> None:
    """The development sign-in only where nobody else can reach it: on loopback, with the HS256
    secret it mints with (refuses to start otherwise)."""
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"IM_API_DEV_SIGNIN needs IM_API_HOST on loopback (it is {settings.host!r})")
    if settings.jwt_secret is None:
        raise SystemExit("IM_API_DEV_SIGNIN needs IM_JWT_SECRET (it mints HS256 tokens)")


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant_id: TenantId
    agent_id: AgentId
    display_name: str = Field(default="", max_length=200)


class DevToken(BaseModel):
    token: str
    expires_at: int = Field(description="Unix seconds.")


dev_router = APIRouter(prefix="/dev", tags=["development"])


@dev_router.post("/signin", response_model=DevToken, status_code=200, include_in_schema=False,
                 responses=errors_doc(404, 422))
async def dev_signin(body: SignIn, request: Request, svc: ServicesDep, directory: DirectoryDep) -> dict:
    """DEVELOPMENT ONLY (IM_API_DEV_SIGNIN): an agent token for anyone who asks, the agent created
    if new. The route does not exist unless the setting is on (404 like any unknown path)."""
    settings = svc.settings
    try:
        await directory.get(body.tenant_id, body.agent_id)  # an existing agent keeps role, email, state
    except NotFound:
        await directory.upsert(body.tenant_id, body.agent_id, body.display_name.strip() or body.agent_id, None,
                               "agent")
    now = int(time.time())
    exp = now + settings.dev_token_ttl_s
    token = jwt.encode({"tid": body.tenant_id, "sub": body.agent_id, "role": "agent", "iat": now, "exp": exp},
                       settings.jwt_secret.get_secret_value(), algorithm="HS256")
    return {"token": token, "expires_at": exp}
