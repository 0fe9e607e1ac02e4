"""Mint dev tokens: HS256 JWTs with the contract's claims (tid, sub, role, exp); a token for a
Kafka record's header (`audience="im-kafka"`) is refused over HTTP and the other way round."""

from __future__ import annotations

import time

import jwt

ROLES = ("agent", "admin", "service")


KAFKA_AUDIENCE = "im-kafka"


def mint(secret: str, tenant: str, subject: str, role: str = "agent", ttl_s: int = 3600,
         audience: str | None = None) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    now = int(time.time())
    claims = {"tid": tenant, "sub": subject, "role": role, "iat": now, "exp": now + ttl_s}
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
