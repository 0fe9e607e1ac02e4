"""Notifications: the documents im-api writes and the notifier reads, and the webhook it sends.

im-api owns the tenant's notification settings (`notification_settings`, one per tenant) and each
agent's preferences (`notification_prefs`, one per tenant:agent); the notifier only reads them,
when it decides, so a change applies to the next decision without an event in between (and the
webhook secret never travels over Kafka). Their shapes are here so both sides agree on them.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

from pydantic import Field

from .models import Related, Resource, UtcTime

SETTINGS_COLLECTION = "notification_settings"
PREFS_COLLECTION = "notification_prefs"

# A digest window shorter than a minute is a stream of emails, not a digest.
DELAY_MAX_S = 24 * 3600
DIGEST_WINDOW_MIN_S = 60
DIGEST_WINDOW_MAX_S = 24 * 3600
# One agent's mutes are one document: bounded so it stays small.
MUTED_MAX = 1000
PREVIEW_MAX_CHARS = 200

WEBHOOK_SIGNATURE_HEADER = "X-IM-Signature"
WEBHOOK_KEY_HEADER = "X-IM-Idempotency-Key"


class TenantNotificationSettings(Resource):
    """How one tenant is notified. Without a webhook URL and with email off, nobody is."""

    tenant_id: str
    webhook_url: str | None = Field(default=None, description="Where the notifier POSTs; None: no webhook.")
    webhook_secret: str | None = Field(default=None, description="HMAC-SHA256 key of the signature; write-only.")
    email_enabled: bool = False
    delay_s: int = Field(default=60, ge=0, le=DELAY_MAX_S,
                         description="How long a message stays unread by an away or offline agent first.")
    assistance_delay_s: int = Field(default=60, ge=0, le=DELAY_MAX_S,
                                    description="The same for assistance requests (0: at once).")
    digest_window_s: int = Field(default=900, ge=DIGEST_WINDOW_MIN_S, le=DIGEST_WINDOW_MAX_S,
                                 description="At most one email per agent in this window.")
    include_bodies: bool = Field(default=False, description="False: metadata only, no message text leaves.")
    updated_at: UtcTime | None = None
    updated_by: str | None = None


class NotificationPrefs(Resource):
    """One agent's own choices."""

    tenant_id: str
    agent_id: str
    do_not_disturb: bool = False
    muted: list[str] = Field(default_factory=list, max_length=MUTED_MAX, description="Muted conversation ids.")


def settings_id(tenant_id: str) -> str:
    return tenant_id


def prefs_id(tenant_id: str, agent_id: str) -> str:
    return f"{tenant_id}:{agent_id}"


# --- the webhook's body ---------------------------------------------------------------------


class WebhookAgent(Resource):
    id: str
    display_name: str | None = None


class WebhookThread(Resource):
    conversation_id: str
    url: str | None = Field(default=None, description="The thread in the console (the operator's template).")
    related: Related | None = None
    unread: int = Field(ge=1, description="Messages waiting in this thread since the agent last read it.")
    first_unread_seq: int = Field(ge=1)
    last_seq: int = Field(ge=1)
    last_message_at: UtcTime
    last_sender: WebhookAgent
    assistance: bool = Field(description="The thread was opened by an assistance request.")
    preview: str | None = Field(default=None, max_length=PREVIEW_MAX_CHARS,
                                description="The last message's beginning; only when the tenant allows bodies.")


class NotificationWebhook(Resource):
    """POSTed to the tenant's webhook URL. Headers: `X-IM-Signature: t=<unix seconds>,v1=<hex
    HMAC-SHA256 of "<t>.<body>" with the tenant's secret>` and `X-IM-Idempotency-Key` (the same on
    every retry of one notification: a receiver that saw it already answers 2xx and drops it)."""

    type: Literal["im.notification"] = "im.notification"
    version: Literal[1] = 1
    id: str = Field(description="The idempotency key.")
    tenant_id: str
    agent: WebhookAgent
    created_at: UtcTime
    threads: list[WebhookThread] = Field(min_length=1)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-IM-Signature` header's value for one attempt."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


__all__ = [
    "NotificationPrefs", "NotificationWebhook", "TenantNotificationSettings", "WebhookAgent", "WebhookThread",
    "sign",
]
