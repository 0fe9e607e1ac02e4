"""Mint dev tokens: HS256 JWTs with the contract's claims (tid, sub, role, exp); a token for a
Kafka record's header (`audience="im-kafka"`) is refused over HTTP and the other way round."""

from __future__ import annotations

import time

import jwt

ROLES = ("agent", "admin", "service")


KAFKA_AUDIENCE = "im-kafka"


def mint(secret: str, tenant: str, subject: str, role: str = "agent", ttl_s: float = 3600,
         audience: str | None = None, **claims: object) -> str:
    """An HS256 token (development; the tests' one way to make tokens). `claims`: more claims,
    e.g. `agent_id` for a service acting for an agent."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    now = time.time()
    payload = {"tid": tenant, "sub": subject, "role": role, "iat": int(now), "exp": int(now + ttl_s), **claims}
    if audience:
        payload["aud"] = audience
    return jwt.encode(payload, secret, algorithm="HS256")
