"""Mint dev tokens: HS256 JWTs with the contract's claims (tid, sub, role, exp)."""

from __future__ import annotations

import time

import jwt

ROLES = ("agent", "admin", "service")


def mint(secret: str, tenant: str, subject: str, role: str = "agent", ttl_s: int = 3600) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    now = int(time.time())
    claims = {"tid": tenant, "sub": subject, "role": role, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")
