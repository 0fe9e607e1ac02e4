"""The two ways out: a signed webhook POST and an SMTP email. Each attempt either succeeds or says
why not in a short sentence (never a body or a secret); retrying is the caller's."""

from __future__ import annotations

import asyncio
import socket
import time
from email.message import EmailMessage
from typing import Any

import aiohttp
import aiosmtplib
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from im_contracts.notifications import WEBHOOK_KEY_HEADER, WEBHOOK_SIGNATURE_HEADER, sign
from im_runtime.webhook_urls import Network, address_allowed, check_url

USER_AGENT = "HelpdeskIM-Notifier/1"
# A receiver's answer is read up to this much (only its status matters).
ANSWER_MAX_BYTES = 64 * 1024


class RefusedAddress(OSError):
    pass


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then keeps only the addresses a webhook may reach: a name that resolves
    (or later re-resolves) to a private, loopback or link-local address is refused at connect."""

    def __init__(self, allowed: list[Network]) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        kept = [a for a in answers if address_allowed(a["host"], self._allowed)]
        if not kept:
            raise RefusedAddress(f"{host} resolves to no address a webhook may reach")
        return kept

    async def close(self) -> None:
        await self._inner.close()


class WebhookSender:
    def __init__(self, *, allow_http: bool, allowed: list[Network], timeout_s: float) -> None:
        self._allow_http, self._allowed, self._timeout_s = allow_http, allowed, timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._allowed), limit=100, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, url: str, secret: str, key: str, body: bytes) -> str | None:
        """One attempt; None when the receiver answered 2xx, else why not."""
        # Checked again at send time: the operator's rules may have tightened since the URL was set
        # (literal addresses bypass the resolver, so they are judged here).
        why = check_url(url, allow_http=self._allow_http, allowed=self._allowed)
        if why:
            return f"the URL {why}"
        assert self._session is not None
        headers = {"Content-Type": "application/json", WEBHOOK_KEY_HEADER: key,
                   WEBHOOK_SIGNATURE_HEADER: sign(secret, int(time.time()), body)}
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=self._timeout_s)) as answer:
                await answer.content.read(ANSWER_MAX_BYTES)
                if 200 <= answer.status < 300:
                    return None
                return f"HTTP {answer.status}"
        except TimeoutError:
            return f"no answer within {self._timeout_s:g} s"
        except RefusedAddress as exc:
            return str(exc)
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {_short(exc)}"


class MailSender:
    def __init__(self, *, host: str, port: int, security: str, username: str | None, password: str | None,
                 timeout_s: float) -> None:
        self._options: dict[str, Any] = {
            "hostname": host, "port": port, "timeout": timeout_s, "use_tls": security == "tls",
            "start_tls": True if security == "starttls" else False,
            **({"username": username, "password": password} if username else {}),
        }
        self.configured = bool(host)
        self._timeout_s = timeout_s

    async def send(self, message: EmailMessage) -> str | None:
        # aiosmtplib's timeout is per command: a slow server could stretch a session past the
        # claim's lease (and another process would send the same mail), so the whole session is bounded.
        try:
            await asyncio.wait_for(aiosmtplib.send(message, **self._options), self._timeout_s)
            return None
        except TimeoutError:
            return f"the SMTP session took over {self._timeout_s:g} s"
        except (aiosmtplib.SMTPException, OSError) as exc:
            return f"{type(exc).__name__}: {_short(exc)}"


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else "-"
