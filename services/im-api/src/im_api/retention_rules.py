"""The rules of the retention job (retention.py): which tenants a round looks at, how its budget is
shared between them, and what of a thread derives from the messages it deletes.

Pure: no I/O and no clock (callers pass `now`). Cutoffs come from `im_contracts.retention`, so
im-api, delivery and the notifier agree on what "older than the limit" means.

- a tenant with retention on is looked at every round, except while it is known to be quiet: its
  oldest message was younger than the limit, so nothing can pass the limit before that message
  does (a shorter limit set meanwhile makes it due at once);
- a round deletes at most `budget` documents across tenants, shared fairly: each tenant gets an
  equal part of what is left, up to what it has, until the budget or the work runs out (one
  tenant with a year of backlog cannot starve the others); the turn rotates by the tenants served,
  so when there are more tenants with work than the budget, each is served within a few rounds;
- a thread's preview (`last_message`) goes when its message is past the limit; a team request's
  question (a copy of seq 1) goes when seq 1 is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any


def quiet_until(days: int, oldest: Iterable[datetime | None], now: datetime) -> datetime:
    """When a tenant with nothing past its limit may next have something: once the oldest of what
    it keeps (`oldest`: its oldest message, its oldest sent outbox record...; None: none) ages past
    the limit. What is written from now on ages past it `days` from now at the earliest."""
    return min([t for t in oldest if t is not None], default=now) + timedelta(days=days)


def due_tenants(retention: Mapping[str, tuple[int, datetime]], quiet: Mapping[str, tuple[int, datetime]],
                now: datetime) -> list[str]:
    """The tenants (of `retention`: tenant -> (days, cutoff)) a round looks at; `quiet`: tenant ->
    (the days it was found quiet under, until when)."""
    due = []
    for tenant, (days, _) in retention.items():
        hint = quiet.get(tenant)
        if hint is not None and hint[0] == days and now < hint[1]:
            continue
        due.append(tenant)
    return sorted(due)


def turn_order(tenants: Sequence[str], turn: int) -> list[str]:
    """`tenants` (sorted) starting at the `turn`-th: whoever waited longest comes first."""
    if not tenants:
        return []
    start = turn % len(tenants)
    return [*tenants[start:], *tenants[:start]]


def fair_shares(demands: Sequence[tuple[str, int]], budget: int) -> dict[str, int]:
    """How much of `budget` each tenant gets (`demands`: (tenant, work it has) in turn order):
    equal parts of what is left, each capped at its work, until one runs out; units that do not
    divide go to the first in turn."""
    shares = {tenant: 0 for tenant, _ in demands}
    wanting = [(tenant, work) for tenant, work in demands if work > 0]
    left = max(0, budget)
    while left > 0 and wanting:
        each = left // len(wanting)
        if each == 0:
            for tenant, _ in wanting[:left]:
                shares[tenant] += 1
            break
        still = []
        for tenant, work in wanting:
            give = min(each, work - shares[tenant])
            shares[tenant] += give
            left -= give
            if shares[tenant] < work:
                still.append((tenant, work))
        wanting = still
    return shares


def next_turn(turn: int, tenants: int, served: int) -> int:
    """The next round starts after those served now (by one when everyone was, so that the units
    that do not divide move round)."""
    return turn + (served if 0 < served < tenants else 1)


def split_share(share: int, messages: int, outbox: int) -> tuple[int, int]:
    """A tenant's share between its messages and its sent outbox records: messages first."""
    m = min(share, messages)
    return m, min(share - m, outbox)


def by_conversation(messages: Iterable[Mapping[str, Any]]) -> dict[str, list[int]]:
    """conversation id -> the seqs of `messages` in it."""
    out: dict[str, list[int]] = {}
    for m in messages:
        out.setdefault(m["conversation_id"], []).append(m["seq"])
    return out


def stale_derived(conversations: Iterable[Mapping[str, Any]], seqs: Mapping[str, Sequence[int]],
                  cutoff: datetime) -> tuple[list[tuple[str, int]], list[str]]:
    """Of `conversations` (their `last_message` and `team_request`), the previews past the limit
    ((id, seq): cleared only while it is still that message) and the questions whose message
    (seq 1, among `seqs`) is deleted."""
    previews, questions = [], []
    for conv in conversations:
        last = conv.get("last_message") or {}
        created = last.get("created_at")
        if created is not None and created < cutoff:
            previews.append((conv["_id"], last["seq"]))
        if 1 in seqs.get(conv["_id"], ()) and (conv.get("team_request") or {}).get("question") is not None:
            questions.append(conv["_id"])
    return previews, questions
