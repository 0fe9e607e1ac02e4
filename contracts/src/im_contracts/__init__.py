"""Helpdesk IM contracts: topics, key rules and event models shared by every service."""

from . import codec, events, models, topics
from .codec import RejectedRecord, dead_letter_for, decode_record
from .events import SCHEMA_VERSION, SYSTEM_TENANT, Event, to_rfc3339
from .topics import ALL_TOPICS, Topic

__all__ = [
    "ALL_TOPICS",
    "SCHEMA_VERSION",
    "SYSTEM_TENANT",
    "Event",
    "RejectedRecord",
    "Topic",
    "codec",
    "dead_letter_for",
    "decode_record",
    "events",
    "models",
    "to_rfc3339",
    "topics",
]
