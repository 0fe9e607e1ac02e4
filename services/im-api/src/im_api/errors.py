"""The contract's error shape for every failure: domain errors, validation, auth, size limits."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from im_runtime.kafka import TRANSIENT_ERRORS
from im_runtime.logs import log, trace_id

logger = logging.getLogger("im_api.errors")


class ApiError(Exception):
    """A failure with a status, a snake_case code and a human sentence; raised by the service layer."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        errors: list[dict[str, str]] | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.details = details
        self.message = message
        self.code = code or self.code
        self.field = field
        self.errors = errors or ([{"field": field, "code": self.code, "message": message}] if field else [])
        self.status = status or self.status
        self.headers = headers


class NotFound(ApiError):
    status, code = 404, "not_found"


class Unprocessable(ApiError):
    status, code = 422, "invalid_request"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "a valid bearer token is required", **kw: Any) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"}, **kw)


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class RecordTooLarge(ApiError):
    """The change would need a Kafka record above the deployment's record limit: refused before
    anything is written, since the relay could never publish it."""

    status, code = 413, "record_too_large"


class InvalidCursor(ApiError):
    status, code = 400, "invalid_cursor"

    def __init__(self, field: str = "cursor") -> None:
        super().__init__("the cursor is not one this server issued", field=field)


def error_body(status: int, code: str, message: str, field: str | None = None,
               errors: list[dict[str, Any]] | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "field": field,
        "errors": errors or [],
        "request_id": trace_id.get(),
    }
    if details is not None:  # only the errors that have machine-readable facts carry it
        body["details"] = details
    return {"error": body}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
                   details: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message, field, errors, details), status_code=status,
                        headers=headers)


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'participant_ids', 0) -> 'participant_ids[0]'; ('query', 'limit') -> 'limit'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.errors, exc.headers, exc.details)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        if any(e.get("type") == "json_invalid" for e in raw):
            return error_response(400, "malformed_json", "the request body is not valid JSON", "body")
        errors = []
        for e in raw:
            kind = e.get("type", "invalid")
            code = "unknown_field" if kind == "extra_forbidden" else kind
            # Messages from pydantic never echo the input value (it may be a message body).
            errors.append({"field": field_name(e.get("loc", ())), "code": code, "message": e.get("msg", "invalid")})
        first = errors[0]["field"] if errors else None
        return error_response(422, "validation_failed", f"invalid value for {first}", first, errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 401: "unauthorized"}
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    async def on_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # MongoDB (or Kafka) unreachable: the transaction did not commit, nothing was written.
        log(logger, logging.WARNING, "dependency unavailable", path=request.url.path, error=type(exc).__name__)
        return error_response(503, "service_unavailable", "a dependency is unavailable; retry shortly",
                              headers={"Retry-After": "1"})

    for transient in TRANSIENT_ERRORS:  # by class: handled as a response, not re-raised as a bug
        app.add_exception_handler(transient, on_unavailable)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log(logger, logging.ERROR, "unhandled error", path=request.url.path, error=type(exc).__name__)
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed to handle this request")
