"""How delivery's processes run under uvicorn: a clean exit on SIGTERM, and no URL query strings
(the stream ticket) in uvicorn's log lines."""

from __future__ import annotations

import logging
import re
import signal
from types import FrameType

_QUERY = re.compile(r"\?[^\s\"']*")


class HideQueryStrings(logging.Filter):
    """uvicorn logs a WebSocket's path *with* its query string ('"WebSocket /v1/stream?ticket=..."
    [accepted]', at INFO on uvicorn.error): the query carries the stream ticket, so uvicorn's
    records lose their query strings before any handler formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn"):
            if isinstance(record.msg, str):
                record.msg = _QUERY.sub("", record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(_QUERY.sub("", a) if isinstance(a, str) else a for a in record.args)
        return True


def hide_query_strings() -> None:
    for handler in logging.getLogger().handlers:
        handler.addFilter(HideQueryStrings())


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def exit_0_after_sigterm() -> None:
    """uvicorn shuts down gracefully on SIGTERM and then re-raises the signal to the handler that
    was installed before it, so by default the process dies of it (status -15) and supervisors
    count a clean stop as a crash. This handler ends the process with status 0 instead (and before
    uvicorn took over, it simply exits: there is nothing to clean up yet)."""
    signal.signal(signal.SIGTERM, _exit_cleanly)
