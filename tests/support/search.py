"""Searching the whole database for a text: what a redaction or an erasure must leave nowhere."""

from __future__ import annotations

from collections.abc import Iterable

import bson


async def holders(db, needles: Iterable[bytes]) -> dict[str, int]:
    """Every collection of `db`, every document — as raw BSON, so a binary value (an outbox
    record's event) is searched too: collection -> how many documents hold any of `needles`."""
    needles = tuple(needles)
    found: dict[str, int] = {}
    for name in await db.list_collection_names():
        async for doc in db[name].find({}):
            raw = bson.encode(doc)
            if any(needle in raw for needle in needles):
                found[name] = found.get(name, 0) + 1
    return found
