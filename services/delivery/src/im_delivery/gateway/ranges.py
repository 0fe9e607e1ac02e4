"""The pump's cursor arithmetic (pure): which range a read asks for, and when what came back
means the queue may have been pruned under the connection.

Cursors increase per agent; a cursor allocated but never written is a gap, which readers allow.
A QueueAdvanced signal announces a cursor (`durable`) up to which every entry is written, so a
read up to it is complete; reads are always bounded ranges, never "everything after": on a long
queue an open range costs the database the whole rest of the queue per read."""

from __future__ import annotations


def signalled_through(last_sent: int, durable: int, limit: int) -> int | None:
    """The end of the next read after `last_sent` when a signal announced `durable` past it (the
    read is then complete through that end); None without one — read the next `limit` cursors."""
    return min(durable, last_sent + limit) if durable > last_sent else None


def must_check_retention(last_sent: int, first_cursor: int | None, through: int) -> bool:
    """Whether the head must be read before going on: the read's first entry is not the next
    cursor, or a range known complete came back empty. Either is a gap (allowed) or entries pruned
    while this connection replayed (4409); pruning marks the head first, so the head says which."""
    if first_cursor is not None:
        return first_cursor != last_sent + 1
    return through > last_sent


def more_to_send(read: int, limit: int, durable: int, last_sent: int) -> bool:
    """Another read follows at once: the last one was full, or a signal announced more."""
    return read == limit or durable > last_sent
