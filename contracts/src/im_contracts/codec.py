"""Decoding records into events and turning a rejected record into a dead letter.

Every consumer of every service decodes with `decode_record` and, when it raises
`RejectedRecord`, publishes `dead_letter_for(...)` to `DEAD_LETTERS` and moves on.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from .events import SCHEMA_VERSION, SYSTEM_TENANT, DeadLetter, Event
from .topics import Topic

# Headers never copied into a dead letter: they are credentials.
SECRET_HEADERS = frozenset({"authorization"})


class RejectedRecord(Exception):
    """A record that can never be processed: it goes to the dead-letter topic with `reason`."""

    def __init__(self, reason: str, detail: str = "", tenant_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.tenant_id = tenant_id


def decode_record(topic: Topic, value: bytes | None) -> Event:
    """Parse one record of `topic` into its event model, or raise `RejectedRecord`."""
    if value is None:
        raise RejectedRecord("malformed_json", "the record has no value")
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RejectedRecord("malformed_json", f"not JSON: {exc.msg if hasattr(exc, 'msg') else exc}")
    if not isinstance(raw, dict):
        raise RejectedRecord("malformed_json", "the record is not a JSON object")
    tenant = raw.get("tenant_id") if isinstance(raw.get("tenant_id"), str) else None
    version = raw.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise RejectedRecord("invalid_event", "schema_version must be an integer", tenant)
    if version > SCHEMA_VERSION:
        raise RejectedRecord(
            "unsupported_schema_version",
            f"schema_version {version} is newer than {SCHEMA_VERSION}",
            tenant,
        )
    types = topic.event_types()
    event_type = raw.get("type")
    if event_type is None and len(types) == 1:
        # Producers outside this codebase may omit the discriminator on single-event topics.
        event_type = next(iter(types))
        raw = {**raw, "type": event_type}
    model = types.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        raise RejectedRecord("unknown_event_type", f"type {event_type!r} is not on {topic.base_name}", tenant)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise RejectedRecord("invalid_event", _describe(exc), tenant) from None


def _describe(exc: ValidationError) -> str:
    # Field paths and error kinds only: input values may hold message bodies.
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['type']}" for e in exc.errors()]
    return "; ".join(parts[:10])


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def dead_letter_for(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes]] | None,
    reason: str,
    detail: str,
    consumer: str,
    tenant_id: str | None = None,
    keep_bytes: int = DeadLetter.KEPT_VALUE_BYTES,
) -> DeadLetter:
    """The dead letter of one record; bounded whatever the record's size (DeadLetter.KEPT_*;
    `keep_bytes` of the value, less where records must be smaller)."""
    kept = [
        (name[: DeadLetter.KEPT_HEADER_BYTES], _b64(None if data is None else data[: DeadLetter.KEPT_HEADER_BYTES]) or "")
        for name, data in (headers or ())
        if name.lower() not in SECRET_HEADERS
    ][: DeadLetter.KEPT_HEADERS]
    return DeadLetter(
        # A claimed tenant id that could not be a tenant's (a forged 10 KB one) would fail the
        # letter's own validation: the record is the system's then.
        tenant_id=tenant_id if tenant_id and len(tenant_id) <= 128 else SYSTEM_TENANT,
        reason=reason,
        detail=detail[: DeadLetter.KEPT_DETAIL_CHARS],
        original_topic=topic,
        original_partition=partition,
        original_offset=offset,
        original_key_b64=_b64(None if key is None else key[: DeadLetter.KEPT_KEY_BYTES]),
        original_value_b64=_b64(None if value is None else value[:keep_bytes]) or "",
        original_value_size=None if value is None else len(value),
        original_value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
        original_value_truncated=value is not None and len(value) > keep_bytes,
        original_headers=kept,
        consumer=consumer,
    )


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    """The first header called `name` (case-insensitive), decoded; None when absent."""
    for key, data in headers or ():
        if key.lower() == name.lower():
            return data.decode(errors="replace") if data is not None else None
    return None


def event_headers(event: Event, **extra: str) -> list[tuple[str, bytes]]:
    """Headers every producer sets: the event type and id (for tracing), plus `extra`."""
    out = [("event-type", event.type.encode()), ("event-id", event.event_id.encode())]
    out += [(k, v.encode()) for k, v in extra.items()]
    return out


def as_json(event: Event) -> dict[str, Any]:
    return json.loads(event.model_dump_json())
