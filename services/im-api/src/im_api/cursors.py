"""Opaque page cursors: base64url JSON the server issued; anything else is 400 invalid_cursor."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from .errors import InvalidCursor

# The numbers in our cursors (stream cursors, counters) stay below this, as every seq does (2**53:
# exact in JSON and in JavaScript, well inside BSON's int64).
MAX_INT = 2**53


def encode(**fields: Any) -> str:
    raw = json.dumps(fields, separators=(",", ":"), default=lambda v: v.isoformat()).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, required: dict[str, type]) -> dict[str, Any]:
    """The fields of `cursor`, each of the type named in `required` (datetime from ISO text)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidCursor() from None
    if not isinstance(data, dict):
        raise InvalidCursor()
    out: dict[str, Any] = {}
    for name, kind in required.items():
        value = data.get(name)
        try:
            if kind is datetime:
                value = datetime.fromisoformat(value)
                if value.tzinfo is None:
                    raise ValueError
            elif not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError
            elif kind is int and not 0 <= value <= MAX_INT:
                raise ValueError  # a forged number past BSON's int64 would fail in the driver (a 500)
        except (TypeError, ValueError):
            raise InvalidCursor() from None
        out[name] = value
    return out
