"""Counting what one piece of code asks MongoDB for, through the driver's own command monitoring:
documents returned per collection and the largest command sent (a `$nin` of every id shows)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

import bson
from pymongo import monitoring


class Reads(monitoring.CommandListener):
    def __init__(self) -> None:
        self.active = False
        self.docs: Counter[str] = Counter()  # collection -> documents returned
        self.commands: Counter[str] = Counter()  # collection -> commands sent
        self.largest_command = 0
        self._collection: dict[int, str] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.active:
            return
        command = event.command
        collection = command.get(event.command_name) if event.command_name != "getMore" else command.get("collection")
        self._collection[event.request_id] = collection if isinstance(collection, str) else event.command_name
        self.commands[self._collection[event.request_id]] += 1
        self.largest_command = max(self.largest_command, len(bson.encode(command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        collection = self._collection.pop(event.request_id, None)
        if collection is None:
            return
        cursor = event.reply.get("cursor") or {}
        batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
        self.docs[collection] += len(batch)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._collection.pop(event.request_id, None)

    @contextlib.contextmanager
    def counting(self) -> Iterator[Reads]:
        """Counts from zero for the `with` block only."""
        self.docs.clear()
        self.commands.clear()
        self.largest_command = 0
        self.active = True
        try:
            yield self
        finally:
            self.active = False
