"""The notification rules of one agent: which waiting threads to tell them about, on which channel,
and when. Pure: no I/O and no clock (callers pass `now`).

One document per agent (`AgentDoc`) holds, per thread, the highest seq someone else posted, the
agent's read position, and how far each channel has told them. The consumers only *raise* these
(`$max`/`$min` updates, `updates_for_message` & co. below), so redelivered or reordered events
change nothing; every decision (`decide`) and every send's outcome (`attempt_*`) is written as a
compare-and-set on `version`, which every consumer update also bumps.

The rules:
- a thread waits on a channel while it has a message from someone else that the agent has not
  read and the channel has not told them about;
- it becomes due `delay` after the later of "it started waiting" and "the agent left" (went away
  or offline; an agent never seen has always been away); assistance requests use their own delay;
- due while the agent is online: they are at the console, so those messages count as seen
  (skipped: online). Due while do-not-disturb is on: skipped (do_not_disturb). A muted thread is
  skipped whenever a decision sees it (muted);
- one notification per channel carries every thread waiting on it (the digest), and only one per
  channel is in flight at a time; email additionally waits `digest_window` after the last email;
- a notification is claimed in the document (the threads' channel positions move with the claim)
  before it is sent, sent under a lease, and retried with backoff until `max_tries`; a process that
  dies mid-send leaves the claim, which is retried with the same key once the lease ends.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Channel = Literal["webhook", "email"]
CHANNELS: tuple[Channel, ...] = ("webhook", "email")
# "Not due" and "never left": a date every $min lowers (MongoDB orders null below dates, so null
# would win every $min and freeze the field).
NEVER = datetime(9999, 12, 31, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Threads kept per agent: the ones nothing waits on go first, then the oldest waiting ones.
THREADS_MAX = 200
# Conversation ids become field names (threads.<id>): only these characters (im-api makes hex ids).
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
SEQ_FIELD = {"webhook": "hook_seq", "email": "mail_seq"}
SINCE_FIELD = {"webhook": "hook_since", "email": "mail_since"}


def safe_id(conversation_id: str) -> bool:
    return bool(_SAFE_ID.match(conversation_id))


def agent_doc_id(tenant_id: str, agent_id: str) -> str:
    return f"{tenant_id}:{agent_id}"


@dataclass(frozen=True)
class Policy:
    """A tenant's settings as the decision needs them, with what the deployment can send."""

    delay: timedelta
    assistance_delay: timedelta
    digest_window: timedelta
    webhook: bool  # the tenant has a webhook URL and secret
    email: bool  # the tenant turned email on and the deployment has an SMTP server
    max_tries: int = 6
    retry_initial: timedelta = timedelta(seconds=5)
    retry_max: timedelta = timedelta(minutes=10)

    def delay_for(self, assistance: bool) -> timedelta:
        return self.assistance_delay if assistance else self.delay

    @property
    def notifies(self) -> bool:
        """Some channel is on: otherwise the tenant's messages and reads are not even recorded."""
        return self.webhook or self.email

    def enabled(self, channel: Channel) -> bool:
        return self.webhook if channel == "webhook" else self.email

    def backoff(self, attempts: int) -> timedelta:
        return min(self.retry_max, self.retry_initial * (2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Prefs:
    do_not_disturb: bool = False
    muted: frozenset[str] = frozenset()


# --- the consumers' updates (no read: raise-only, so any order and any repeat is the same) --------


def updates_for_message(*, conversation_id: str, seq: int, sender_id: str, recipients: list[str],
                        at: datetime, preview: str, assistance: bool, due_after: timedelta
                        ) -> list[tuple[str, dict[str, Any], dict[str, Any], bool]]:
    """For each recipient: (agent id, filter extra, update, upsert) pairs, two per agent — the
    raise-only part, then the thread's "last message" fields only if this message is still its
    latest (a redelivered older one must not overwrite a newer preview)."""
    t = f"threads.{conversation_id}"
    out = []
    for agent in recipients:
        if agent == sender_id:  # one's own message: the thread is read up to it
            out.append((agent, {}, with_defaults(agent, {"$max": {f"{t}.read_seq": seq}, "$inc": {"version": 1}}),
                        True))
            continue
        raise_only: dict[str, Any] = {
            "$max": {f"{t}.last_seq": seq, **({f"{t}.assist_seq": seq} if assistance else {})},
            "$min": {f"{t}.hook_since": at, f"{t}.mail_since": at, "due_at": at + due_after},
            "$inc": {"version": 1},
        }
        out.append((agent, {}, with_defaults(agent, raise_only), True))
        # It bumps the version too: a decision read between the two must not write over it.
        out.append((agent, {f"{t}.last_seq": seq},
                    {"$set": {f"{t}.last_at": at, f"{t}.last_sender": sender_id, f"{t}.preview": preview},
                     "$inc": {"version": 1}}, False))
    return out


def updates_for_team_request(*, change: str, conversation_id: str, seq: int, asked_by: str, newly_offered: list[str],
                             withdrawn_from: list[str], at: datetime, preview: str | None,
                             due_after: timedelta) -> list[tuple[str, dict[str, Any], dict[str, Any], bool]]:
    """A team request as the notifier sees it: an offer (at the start, an escalation, a release)
    waits for each member it newly reaches like an assistance request to them — so an escalation
    reaches the offline members; once it is taken it stops waiting for those it was withdrawn
    from (marked read there; the thread's participants keep their own read state)."""
    ops = [(agent, {}, update_for_read(agent_id=agent, conversation_id=conversation_id, seq=seq), True)
           for agent in withdrawn_from]
    if change != "claimed":
        ops += updates_for_message(conversation_id=conversation_id, seq=seq, sender_id=asked_by,
                                   recipients=newly_offered, at=at, preview=preview, assistance=True,
                                   due_after=due_after)
    return ops


def updates_for_changed_message(*, conversation_id: str, seq: int, recipients: list[str], preview: str | None
                                ) -> list[tuple[str, dict[str, Any], dict[str, Any], bool]]:
    """An edited or deleted message that is still a thread's latest: its preview follows (None
    for a deletion, or where the tenant keeps no bodies) — no notification ever shows a body the
    author took back."""
    t = f"threads.{conversation_id}"
    return [(agent, {f"{t}.last_seq": seq}, {"$set": {f"{t}.preview": preview}, "$inc": {"version": 1}}, False)
            for agent in recipients]


def updates_for_redaction(*, conversation_id: str, seq: int, recipients: list[str], question_removed: bool
                          ) -> list[tuple[str, dict[str, Any], dict[str, Any], bool]]:
    """A redacted message: no preview keeps it — the thread's latest preview when it is that
    message, and any preview of the thread when the team request's question was cut from it (an
    offer's preview is the question, whatever seq it was kept under)."""
    if not question_removed:
        return updates_for_changed_message(conversation_id=conversation_id, seq=seq, recipients=recipients,
                                           preview=None)
    t = f"threads.{conversation_id}"
    return [(agent, {f"{t}.preview": {"$ne": None}}, {"$set": {f"{t}.preview": None}, "$inc": {"version": 1}}, False)
            for agent in recipients]


def forget_claimed_previews(doc: "AgentDoc", conversation_id: str) -> int:
    """Pure: clears the previews of a thread inside the notifications still being sent to the
    agent (a claim carries its own copy); how many. A redaction reaches them too."""
    cleared = 0
    for claim in doc.outgoing.values():
        for item in claim.get("threads", []):
            if item.get("conversation_id") == conversation_id and item.get("preview") is not None:
                item["preview"] = None
                cleared += 1
    return cleared


def update_for_read(*, agent_id: str, conversation_id: str, seq: int) -> dict[str, Any]:
    return with_defaults(agent_id, {"$max": {f"threads.{conversation_id}.read_seq": seq}, "$inc": {"version": 1}})


def update_for_presence(*, agent_id: str, status: str, at: datetime, due_after: timedelta | None) -> dict[str, Any]:
    """Applied only where `status_at` is older (the caller's filter). Leaving sets `absent_since`
    to the first moment of the absence ($min: away then offline keeps the time they went away) and,
    with `due_after`, asks for a look at the agent then (None: the tenant notifies nobody)."""
    update: dict[str, Any] = {"$set": {"status": status, "status_at": at}, "$inc": {"version": 1}}
    if status == "online":
        update["$set"]["absent_since"] = NEVER
    else:
        update["$min"] = {"absent_since": at, **({"due_at": at + due_after} if due_after is not None else {})}
    return with_defaults(agent_id, update)


def update_for_agent(*, agent_id: str, display_name: str, email: str | None, active: bool,
                     at: datetime) -> dict[str, Any]:
    """Applied only where `agent_at` is older (the caller's filter)."""
    return with_defaults(agent_id, {"$set": {"display_name": display_name, "email": email, "active": active,
                                             "agent_at": at}, "$inc": {"version": 1}})


def with_defaults(agent_id: str, update: dict[str, Any]) -> dict[str, Any]:
    """`update` plus `$setOnInsert` of a new agent document's other fields (MongoDB refuses an
    update naming one path, or a path and its parent, twice). An agent the notifier has never seen
    a presence for has never been at the console (`AgentDoc.left_at`); `absent_since` waits for
    the first presence event ($min from NEVER)."""
    new = {"agent_id": agent_id, "status": "offline", "status_at": EPOCH, "absent_since": NEVER,
           "due_at": NEVER, "outgoing": {}, "last_mail_at": EPOCH, "sent": 0, "agent_at": EPOCH,
           "threads": {}, "version": 0}
    touched = {path.split(".")[0] for op in update.values() for path in op}
    return {**update, "$setOnInsert": {k: v for k, v in new.items() if k not in touched}}


# --- the decision -----------------------------------------------------------------------------


@dataclass
class Thread:
    conversation_id: str
    last_seq: int = 0
    read_seq: int = 0
    assist_seq: int = 0
    hook_seq: int = 0
    mail_seq: int = 0
    hook_since: datetime = NEVER
    mail_since: datetime = NEVER
    last_at: datetime | None = None
    last_sender: str | None = None
    preview: str | None = None

    def told(self, channel: Channel) -> int:
        return getattr(self, SEQ_FIELD[channel])

    def waiting_from(self, channel: Channel) -> int:
        """The first seq this channel would tell about (everything after read and told)."""
        return max(self.read_seq, self.told(channel)) + 1

    def waits(self, channel: Channel) -> bool:
        return self.last_seq >= self.waiting_from(channel)

    def since(self, channel: Channel) -> datetime:
        return getattr(self, SINCE_FIELD[channel])

    def assistance(self, channel: Channel) -> bool:
        return self.assist_seq >= self.waiting_from(channel)

    def mark_told(self, channel: Channel) -> None:
        setattr(self, SEQ_FIELD[channel], max(self.told(channel), self.last_seq))
        setattr(self, SINCE_FIELD[channel], NEVER)

    def settle(self) -> list[Channel]:
        """A channel's `since` is kept only while the thread waits on it. Returns the channels it
        waited on until the agent read it."""
        read = []
        for channel in CHANNELS:
            if not self.waits(channel) and self.since(channel) != NEVER:
                if self.read_seq >= self.last_seq and self.last_seq > self.told(channel):
                    read.append(channel)
                setattr(self, SINCE_FIELD[channel], NEVER)
        return read


@dataclass
class AgentDoc:
    tenant_id: str
    agent_id: str
    version: int = 0
    status: str = "offline"
    status_at: datetime = EPOCH
    absent_since: datetime = NEVER
    due_at: datetime = NEVER
    threads: dict[str, Thread] = field(default_factory=dict)
    outgoing: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_mail_at: datetime = EPOCH
    sent: int = 0  # notifications claimed so far: the next one's key derives from it
    display_name: str | None = None
    email: str | None = None
    active: bool = True  # a deactivated agent is notified of nothing
    agent_at: datetime = EPOCH  # the directory event these three came from

    def left_at(self) -> datetime:
        """When the agent left the console. One never seen present (no presence event at all: an
        agent who never connected) has always been away."""
        return EPOCH if self.status_at == EPOCH else self.absent_since


# What a decision or a send's outcome writes (NotifierStore.save): the consumers own the rest.
DECISION_FIELDS = ("threads", "outgoing", "due_at", "last_mail_at", "sent", "version")


@dataclass
class Decision:
    claimed: dict[Channel, dict[str, Any]] = field(default_factory=dict)
    skipped: list[tuple[Channel, str, int]] = field(default_factory=list)  # (channel, why, threads)
    changed: bool = False


def due_time(thread: Thread, channel: Channel, doc: AgentDoc, policy: Policy) -> datetime:
    """When a waiting thread is due on a channel. While the agent is online it is due `delay` after
    it started waiting (to be skipped as seen, if they are still online then)."""
    start = thread.since(channel)
    if doc.status != "online":
        start = max(start, doc.left_at())
    return start + policy.delay_for(thread.assistance(channel))


def decide(doc: AgentDoc, now: datetime, policy: Policy, prefs: Prefs) -> Decision:
    """What to do now for this agent: claims new notifications into `doc.outgoing`, marks what is
    skipped as told, drops threads nothing waits on beyond THREADS_MAX, and sets `doc.due_at`."""
    out = Decision()
    for thread in doc.threads.values():
        for channel in thread.settle():
            out.skipped.append((channel, "read", 1))
            out.changed = True
    for channel in CHANNELS:
        waiting = [t for t in doc.threads.values() if t.waits(channel)]
        if not waiting:
            continue
        if not doc.active:
            _skip(out, channel, "inactive", waiting)
            continue
        if not policy.enabled(channel):
            _skip(out, channel, "channel_off", waiting)
            continue
        if channel == "email" and not doc.email:
            _skip(out, channel, "no_address", waiting)
            continue
        muted = [t for t in waiting if t.conversation_id in prefs.muted]
        if muted:
            _skip(out, channel, "muted", muted)
            waiting = [t for t in waiting if t.conversation_id not in prefs.muted]
        due = [t for t in waiting if due_time(t, channel, doc, policy) <= now]
        if not due:
            continue
        if doc.status == "online":
            _skip(out, channel, "online", due)
            continue
        if prefs.do_not_disturb:
            _skip(out, channel, "do_not_disturb", due)
            continue
        if channel in doc.outgoing:
            continue  # one in flight: the rest waits for the next one
        if channel == "email" and now < doc.last_mail_at + policy.digest_window:
            continue
        remaining = [t for t in waiting if t.waits(channel)]
        out.claimed[channel] = _claim(doc, channel, remaining, now)
        out.changed = True
    _bound_threads(doc, out)
    new_due = next_due(doc, policy)
    out.changed = out.changed or new_due != doc.due_at
    doc.due_at = new_due
    return out


def _skip(out: Decision, channel: Channel, why: str, threads: list[Thread]) -> None:
    for thread in threads:
        thread.mark_told(channel)
    out.skipped.append((channel, why, len(threads)))
    out.changed = True


def _claim(doc: AgentDoc, channel: Channel, threads: list[Thread], now: datetime) -> dict[str, Any]:
    doc.sent += 1
    key = hashlib.sha256(f"{doc.tenant_id}\x00{doc.agent_id}\x00{channel}\x00{doc.sent}".encode()).hexdigest()[:32]
    items = []
    for thread in sorted(threads, key=lambda t: t.last_at or EPOCH, reverse=True):
        first = thread.waiting_from(channel)
        items.append({"conversation_id": thread.conversation_id, "first_unread_seq": first,
                      "last_seq": thread.last_seq, "unread": thread.last_seq - first + 1,
                      "last_at": thread.last_at or now, "last_sender": thread.last_sender,
                      "assistance": thread.assistance(channel), "preview": thread.preview})
        thread.mark_told(channel)
    claim = {"key": key, "channel": channel, "threads": items, "created_at": now, "attempts": 0,
             "next_try_at": now, "lease_until": None, "error": None}
    doc.outgoing[channel] = claim
    if channel == "email":
        doc.last_mail_at = now
    return claim


def _bound_threads(doc: AgentDoc, out: Decision) -> None:
    if len(doc.threads) <= THREADS_MAX:
        return
    quiet = [t for t in doc.threads.values() if not any(t.waits(c) for c in CHANNELS)]
    quiet.sort(key=lambda t: t.last_at or EPOCH)
    for thread in quiet[: len(doc.threads) - THREADS_MAX]:
        del doc.threads[thread.conversation_id]
    if len(doc.threads) > THREADS_MAX:
        rest = sorted(doc.threads.values(), key=lambda t: t.last_at or EPOCH)
        dropped = rest[: len(doc.threads) - THREADS_MAX]
        for channel in CHANNELS:
            waited = sum(1 for t in dropped if t.waits(channel))
            if waited:
                out.skipped.append((channel, "too_many_threads", waited))
        for thread in dropped:
            del doc.threads[thread.conversation_id]
    out.changed = True


def next_due(doc: AgentDoc, policy: Policy) -> datetime:
    """When this agent needs looking at again: a waiting thread's due time, an email's window, an
    in-flight notification's next try or the end of its lease."""
    due = NEVER
    for channel in CHANNELS:
        claim = doc.outgoing.get(channel)
        if claim is not None:
            due = min(due, claim["lease_until"] or claim["next_try_at"])
            continue
        times = [due_time(t, channel, doc, policy) for t in doc.threads.values() if t.waits(channel)]
        if times:
            first = min(times)
            if channel == "email" and doc.status != "online":
                first = max(first, doc.last_mail_at + policy.digest_window)
            due = min(due, first)
    return due


# --- sending ----------------------------------------------------------------------------------


def attempt_started(doc: AgentDoc, channel: Channel, key: str, now: datetime, lease: timedelta,
                    policy: Policy) -> bool:
    """Takes the claim's lease for one attempt; False when it is not this claim's turn."""
    claim = doc.outgoing.get(channel)
    if claim is None or claim["key"] != key:
        return False
    if claim["lease_until"] is not None and claim["lease_until"] > now:
        return False
    if claim["next_try_at"] > now and claim["lease_until"] is None:
        return False
    claim["attempts"] += 1
    claim["lease_until"] = now + lease
    doc.due_at = next_due(doc, policy)
    return True


def out_of_tries(doc: AgentDoc, channel: Channel, key: str, now: datetime, policy: Policy) -> bool:
    """A claim whose tries are used up with no live attempt: its last attempt never wrote an
    outcome (the process stopped mid-send), so it is given up now rather than tried forever."""
    claim = doc.outgoing.get(channel)
    return (claim is not None and claim["key"] == key and claim["attempts"] >= policy.max_tries
            and (claim["lease_until"] is None or claim["lease_until"] <= now))


def attempt_deferred(doc: AgentDoc, channel: Channel, key: str, until: datetime, policy: Policy) -> bool:
    """Puts a claim's next attempt off to `until` (no attempt counted); False when it is not there
    or an attempt holds its lease."""
    claim = doc.outgoing.get(channel)
    if claim is None or claim["key"] != key or (claim["lease_until"] is not None and claim["lease_until"] > until):
        return False
    claim["next_try_at"] = max(claim["next_try_at"], until)
    claim["lease_until"] = None
    doc.due_at = next_due(doc, policy)
    return True


def attempt_finished(doc: AgentDoc, channel: Channel, key: str, now: datetime, policy: Policy,
                     error: str | None) -> Literal["sent", "retry", "dead", "gone"]:
    """Records one attempt's outcome. `gone`: the claim is no longer there (nothing to record)."""
    claim = doc.outgoing.get(channel)
    if claim is None or claim["key"] != key:
        return "gone"
    if error is None:
        del doc.outgoing[channel]
        outcome: Literal["sent", "retry", "dead", "gone"] = "sent"
    elif claim["attempts"] >= policy.max_tries:
        del doc.outgoing[channel]
        outcome = "dead"
    else:
        claim["lease_until"] = None
        claim["next_try_at"] = now + policy.backoff(claim["attempts"])
        claim["error"] = error[:200]
        outcome = "retry"
    doc.due_at = next_due(doc, policy)
    return outcome


def ready_claims(doc: AgentDoc, now: datetime) -> list[dict[str, Any]]:
    """The claims whose next attempt may start now (none leased by a living attempt)."""
    return [c for c in doc.outgoing.values()
            if (c["lease_until"] is None and c["next_try_at"] <= now)
            or (c["lease_until"] is not None and c["lease_until"] <= now)]
