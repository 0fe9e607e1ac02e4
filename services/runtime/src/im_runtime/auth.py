"""Verifying bearer tokens and single-use WebSocket tickets.

A token's claims: `tid` tenant, `sub` agent (or service) id, `role` agent|admin|service, `exp`.
Bearer tokens are signed by the deployment's identity provider: verified with its public key
(`IM_JWT_PUBLIC_KEY`, RS256, ES256 or EdDSA) or its key set (`IM_JWKS_URL`), so that no service
holds what could mint one; HS256 with `IM_JWT_SECRET` is for development.

Audiences keep each token to its door: a stream ticket (`im-stream-ticket`, 30 s, minted by im-api
with `IM_TICKET_SECRET` for the gateway) is never a bearer token; a service token carried in a
Kafka record's header (`im-kafka`: assistance requests) is refused over HTTP, and an HTTP token is
refused in a Kafka header — a token leaked from one path opens no other.
Whether an `agent` token's agent is still active is the caller's check (its directory).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from .logs import log
from .settings import CommonSettings

logger = logging.getLogger("im_runtime.auth")

Role = Literal["agent", "admin", "service"]
ROLES: tuple[str, ...] = ("agent", "admin", "service")
TICKET_AUDIENCE = "im-stream-ticket"
KAFKA_AUDIENCE = "im-kafka"
ASYMMETRIC = ["RS256", "ES256", "EdDSA"]


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


def _audiences(claims: dict[str, Any]) -> set[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return {aud}
    return {a for a in aud if isinstance(a, str)} if isinstance(aud, list) else set()


class KeySet:
    """A JWKS held in memory and refreshed in the background: a lookup never waits on the network
    (the event loop serves every socket), and an unknown key id triggers at most one refresh per
    `min_refresh_s` — a stream of tokens with made-up `kid`s cannot make it fetch per request."""

    def __init__(self, url: str, refresh_s: float, min_refresh_s: float, timeout_s: float = 5.0) -> None:
        self.url = url
        self.refresh_s = refresh_s
        self.min_refresh_s = min_refresh_s
        self.timeout_s = timeout_s
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = -float("inf")  # monotonic time of the last fetch attempt
        self.fetches = 0
        self._pending: asyncio.Task | None = None

    def _fetch_blocking(self) -> dict[str, jwt.PyJWK]:
        with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:  # noqa: S310 - operator's URL
            data = json.loads(response.read(1024 * 1024))
        keys = {}
        for key in jwt.PyJWKSet.from_dict(data).keys:
            if key.key_id and key.public_key_use in (None, "sig"):  # never an encryption key
                keys[key.key_id] = key
        return keys

    async def refresh(self) -> None:
        self.fetched_at = time.monotonic()
        self.fetches += 1
        try:
            self.keys = await asyncio.to_thread(self._fetch_blocking)
        except Exception as exc:  # noqa: BLE001 - the keys held so far stay in use
            log(logger, logging.WARNING, "key set not fetched", error=type(exc).__name__)

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    @property
    def refreshing(self) -> asyncio.Task | None:
        """The refresh an unknown key id started, while it runs (None when none did)."""
        return self._pending

    def get(self, kid: str | None) -> jwt.PyJWK:
        key = self.keys.get(kid or "")
        if key is not None:
            return key
        if time.monotonic() - self.fetched_at >= self.min_refresh_s and (self._pending is None or self._pending.done()):
            try:
                self._pending = asyncio.get_running_loop().create_task(self.refresh())
            except RuntimeError:
                pass  # no loop (a synchronous caller): the periodic refresh will do
        raise AuthError("unknown signing key")


class TokenVerifier:
    def __init__(self, settings: CommonSettings, leeway_s: float = 5.0) -> None:
        settings.require_auth()
        self._secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._public_key = settings.jwt_public_key.strip() if settings.jwt_public_key else None
        ticket = settings.ticket_secret or settings.jwt_secret
        self._ticket_secret = ticket.get_secret_value() if ticket else None
        self.keyset = (KeySet(settings.jwks_url, settings.jwks_refresh_s, settings.jwks_min_refresh_s)
                       if settings.jwks_url else None)
        self._leeway = leeway_s
        self._audience = settings.jwt_audience or None  # an empty value (.env.example's) is unset
        self._issuer = settings.jwt_issuer or None

    async def start(self) -> None:
        """Fetches the key set once before serving (a no-op without one)."""
        if self.keyset is not None:
            await self.keyset.refresh()

    def _key(self, token: str) -> tuple[Any, list[str]]:
        if self.keyset is not None:
            try:
                kid = jwt.get_unverified_header(token).get("kid")
            except jwt.PyJWTError as exc:
                raise AuthError() from exc
            return self.keyset.get(kid if isinstance(kid, str) else None).key, ASYMMETRIC
        if self._public_key is not None:
            return self._public_key, ASYMMETRIC
        return self._secret, ["HS256"]

    def _decode(self, token: str) -> dict[str, Any]:
        key, algorithms = self._key(token)
        require = ["exp", "sub", "tid", "role"] + (["iss"] if self._issuer else [])
        try:
            claims = jwt.decode(token, key, algorithms=algorithms, leeway=self._leeway, issuer=self._issuer,
                                options={"require": require, "verify_aud": False})
        except (jwt.PyJWTError, ValueError) as exc:
            raise AuthError() from exc
        return claims

    def verify(self, token: str) -> Principal:
        """A bearer token presented over HTTP or the WebSocket (with IM_JWT_AUDIENCE: naming it)."""
        claims = self._decode(token)
        audiences = _audiences(claims)
        if self._audience and self._audience not in audiences:
            raise AuthError(f"the token is not for {self._audience}")
        if TICKET_AUDIENCE in audiences:
            raise AuthError("a stream ticket is not a bearer token")
        if KAFKA_AUDIENCE in audiences:
            raise AuthError("a token for Kafka records is not accepted here")
        return self._principal(claims)

    def verify_for_kafka(self, token: str) -> Principal:
        """A service token in a Kafka record's header: it must carry the `im-kafka` audience."""
        claims = self._decode(token)
        if KAFKA_AUDIENCE not in _audiences(claims):
            raise AuthError(f"a token in a Kafka record needs the {KAFKA_AUDIENCE} audience")
        return self._principal(claims)

    @staticmethod
    def _principal(claims: dict[str, Any]) -> Principal:
        role, tid, sub = claims.get("role"), claims.get("tid"), claims.get("sub")
        if role not in ROLES or not isinstance(tid, str) or not tid or not isinstance(sub, str) or not sub:
            raise AuthError("token claims are incomplete")
        acting = claims.get("acting_agent_id") if role == "service" else None
        return Principal(tid, sub, role, float(claims["exp"]), acting if isinstance(acting, str) else None)

    # --- stream tickets -----------------------------------------------------------------------

    def mint_ticket(self, principal: Principal, device_id: str, ttl_s: float = 30.0) -> tuple[str, StreamTicket]:
        if self._ticket_secret is None:
            raise AuthError("stream tickets need IM_TICKET_SECRET")
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
        return jwt.encode(claims, self._ticket_secret, algorithm="HS256"), ticket

    def verify_ticket(self, token: str) -> StreamTicket:
        """Signature, audience and expiry; single use is the gateway's check (by `ticket_id`)."""
        if self._ticket_secret is None:
            raise AuthError("stream tickets need IM_TICKET_SECRET")
        try:
            claims = jwt.decode(
                token,
                self._ticket_secret,
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
