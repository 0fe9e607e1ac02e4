"""What the notifier talks to, as real servers in the test process: an HTTP receiver (a small ASGI
app under uvicorn) that checks each webhook's signature, and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx
import uvicorn
from aiosmtpd.controller import Controller
from imctl import servers as local

# What the receiver answers, per path: a list consumed one per request ("hang": never answers
# until the client goes away); when empty, 200.
Plan = list[int | str]


@dataclass
class Received:
    path: str
    key: str
    body: dict[str, Any]
    signature_ok: bool
    answered: int | None = None  # None: the request was left hanging


@dataclass
class WebhookReceiver:
    secrets: dict[str, str]  # path -> the tenant's secret
    plans: dict[str, Plan] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    max_skew_s: int = 300

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def accepted(self, path: str | None = None) -> list[Received]:
        return [r for r in self.received if r.answered == 200 and (path is None or r.path == path)]

    def on(self, path: str | None = None) -> list[Received]:
        return [r for r in self.received if path is None or r.path == path]

    def verify(self, path: str, header: str, body: bytes) -> bool:
        """As a receiver should: the timestamp is recent, the HMAC matches (constant-time compare)."""
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        try:
            stamp = int(parts["t"])
        except (KeyError, ValueError):
            return False
        if abs(time.time() - stamp) > self.max_skew_s or path not in self.secrets:
            return False
        expected = hmac.new(self.secrets[path].encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts.get("v1", ""))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        record = Received(path, headers.get("x-im-idempotency-key", ""), json.loads(body or b"{}"),
                          self.verify(path, headers.get("x-im-signature", ""), body))
        self.received.append(record)
        plan = self.plans.get(path) or []
        action = plan.pop(0) if plan else 200
        if action == "hang":
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        status = int(action) if record.signature_ok else 401
        record.answered = status
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok" if status == 200 else b"no"})


@contextlib.asynccontextmanager
async def running_receiver(receiver: WebhookReceiver) -> AsyncIterator[WebhookReceiver]:
    receiver.port = local.free_port()
    server = uvicorn.Server(uvicorn.Config(receiver, host="127.0.0.1", port=receiver.port, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield receiver
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


@contextlib.contextmanager
def mail_catcher():
    """An SMTP server on a free loopback port (its own thread, as aiosmtpd runs); `.handler.messages`."""
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=local.free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def notifier_env(env: dict[str, str], *, port: int, smtp_port: int | None, **more: str) -> dict[str, str]:
    """The notifier's environment in tests: short timings (settings, not sleeps), loopback allowed."""
    return {
        **env,
        "IM_NOTIFIER_PORT": str(port),
        "IM_NOTIFIER_SWEEP_INTERVAL_S": "0.2",
        "IM_NOTIFIER_SETTINGS_CACHE_S": "0",
        "IM_NOTIFIER_THREAD_URL_TEMPLATE": "http://console.test/#/im/{conversation_id}",
        **({"IM_NOTIFIER_SMTP_HOST": "127.0.0.1", "IM_NOTIFIER_SMTP_PORT": str(smtp_port),
            "IM_NOTIFIER_SMTP_SECURITY": "none", "IM_NOTIFIER_SMTP_FROM": "Helpdesk IM <im@helpdesk.test>"}
           if smtp_port else {}),
        **more,
    }


WEBHOOKS_ON_LOOPBACK = {"IM_WEBHOOK_ALLOW_HTTP": "true", "IM_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}


async def metric(base_url: str, name: str, **labels: str) -> float:
    """One series of a service's /metrics (0 when absent)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{base_url}/metrics", timeout=10)).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        head, _, rest = series.partition("{")
        if head != name:
            continue
        got = ",".join(sorted(p for p in rest.rstrip("}").split(",") if p))
        if got == want:
            return float(value)
    return 0.0


def start_notifier(services, env: dict[str, str], smtp_port: int | None, port: int | None = None, **more: str):
    port = port or local.free_port()
    proc = services.start("notifier", ["-m", "im_notifier"], notifier_env(env, port=port, smtp_port=smtp_port, **more),
                          f"http://127.0.0.1:{port}/readyz")
    return proc, f"http://127.0.0.1:{port}"
