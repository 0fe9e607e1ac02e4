"""Message retention: the tenant's setting, which every service that keeps a copy of a message obeys.

im-api owns the setting (`retention_days` in `message_settings`, one document per tenant, set by
the tenant's admins) and deletes the messages. Delivery and the notifier read the same document
from the same database for the copies they keep (queued frames, thread previews): the setting
changes rarely and each job reads it at the start of its own round, so no event is needed — and a
copy can never be kept under a limit the job has not heard of yet. Its shape and the one rule of
what "older than the limit" means are here so the three agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

MESSAGE_SETTINGS_COLLECTION = "message_settings"
RETENTION_DAYS_MIN = 1
RETENTION_DAYS_MAX = 3650  # ten years: beyond that "keep for ever" (null) is what is meant

# The query of every tenant with retention on: a few documents, one per tenant that set anything.
RETENTION_ON: dict[str, Any] = {"retention_days": {"$gte": RETENTION_DAYS_MIN}}


def retention_days(doc: Mapping[str, Any] | None) -> int | None:
    """The tenant's limit in days, None when off (absent, null, or a value no admin could set)."""
    value = (doc or {}).get("retention_days")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if RETENTION_DAYS_MIN <= value <= RETENTION_DAYS_MAX else None


def cutoff(days: int, now: datetime) -> datetime:
    """Everything created strictly before this is past the limit."""
    return now - timedelta(days=days)


def tenant_cutoffs(docs: Iterable[Mapping[str, Any]], now: datetime) -> dict[str, tuple[int, datetime]]:
    """tenant -> (days, cutoff) of every settings document with retention on."""
    out: dict[str, tuple[int, datetime]] = {}
    for doc in docs:
        days = retention_days(doc)
        if days is not None and isinstance(doc.get("tenant_id"), str):
            out[doc["tenant_id"]] = (days, cutoff(days, now))
    return out
