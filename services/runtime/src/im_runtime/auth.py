"""Verifying bearer tokens (HS256 secret or a JWKS URL) and single-use WebSocket tickets.

A token's claims: `tid` tenant, `sub` agent (or service) id, `role` agent|admin|service, `exp`.
A stream ticket is a separate short-lived JWT (audience `im-stream-ticket`, 30 s) that names the
agent and device; it can never be used as a bearer token, nor a bearer token as a ticket.
Whether an `agent` token's agent is still active is the caller's check (its directory).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Literal

import jwt

from .settings import CommonSettings

Role = Literal["agent", "admin", "service"]
ROLES: tuple[str, ...] = ("agent", "admin", "service")
TICKET_AUDIENCE = "im-stream-ticket"


class AuthError(Exception):
    def __init__(self, message: str = "invalid or expired token") -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    subject: str
    role: Role
    expires_at: float
    acting_agent_id: str | None = None

    @property
    def agent_id(self) -> str:
        """The agent this call acts as: the subject, or the agent a service token names."""
        return self.acting_agent_id or self.subject


@dataclass(frozen=True)
class StreamTicket:
    tenant_id: str
    agent_id: str
    device_id: str
    ticket_id: str
    expires_at: float
    token_expires_at: float  # the bearer token's own expiry: the socket closes 4401 then


class TokenVerifier:
    def __init__(self, settings: CommonSettings, leeway_s: float = 5.0) -> None:
        settings.require_auth()
        self._secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._jwks = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None
        self._leeway = leeway_s

    def _key(self, token: str):
        if self._jwks is not None:
            return self._jwks.get_signing_key_from_jwt(token).key, ["RS256", "ES256", "EdDSA"]
        return self._secret, ["HS256"]

    def verify(self, token: str) -> Principal:
        try:
            key, algorithms = self._key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "tid", "role"], "verify_aud": False},
            )
        except (jwt.PyJWTError, ValueError) as exc:
            raise AuthError() from exc
        if claims.get("aud") == TICKET_AUDIENCE:
            raise AuthError("a stream ticket is not a bearer token")
        role, tid, sub = claims.get("role"), claims.get("tid"), claims.get("sub")
        if role not in ROLES or not isinstance(tid, str) or not tid or not isinstance(sub, str) or not sub:
            raise AuthError("token claims are incomplete")
        acting = claims.get("acting_agent_id") if role == "service" else None
        return Principal(tid, sub, role, float(claims["exp"]), acting if isinstance(acting, str) else None)

    # --- stream tickets -----------------------------------------------------------------------

    def mint_ticket(self, principal: Principal, device_id: str, ttl_s: float = 30.0) -> tuple[str, StreamTicket]:
        if self._secret is None:
            raise AuthError("stream tickets need IM_JWT_SECRET")
        now = time.time()
        ticket = StreamTicket(
            tenant_id=principal.tenant_id,
            agent_id=principal.agent_id,
            device_id=device_id,
            ticket_id=uuid.uuid4().hex,
            expires_at=now + ttl_s,
            token_expires_at=principal.expires_at,
        )
        claims = {
            "aud": TICKET_AUDIENCE,
            "tid": ticket.tenant_id,
            "sub": ticket.agent_id,
            "dev": device_id,
            "jti": ticket.ticket_id,
            "iat": int(now),
            "exp": ticket.expires_at,
            "tex": ticket.token_expires_at,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256"), ticket

    def verify_ticket(self, token: str) -> StreamTicket:
        """Signature, audience and expiry; single use is the gateway's check (by `ticket_id`)."""
        if self._secret is None:
            raise AuthError("stream tickets need IM_JWT_SECRET")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=TICKET_AUDIENCE,
                options={"require": ["exp", "sub", "tid", "jti", "dev"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError("invalid or expired ticket") from exc
        return StreamTicket(
            tenant_id=claims["tid"],
            agent_id=claims["sub"],
            device_id=claims["dev"],
            ticket_id=claims["jti"],
            expires_at=float(claims["exp"]),
            token_expires_at=float(claims.get("tex", claims["exp"])),
        )


def new_id() -> str:
    return uuid.uuid4().hex
