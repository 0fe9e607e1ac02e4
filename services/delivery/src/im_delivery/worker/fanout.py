"""The fan-out: from domain events to one queue append per recipient (and live-only frames).

Idempotent on (conversation_id, seq): a message is re-fanned-out when re-consumed (the queue
writer drops it by dedupe key), and a message whose predecessor is missing is held back in
MongoDB until that predecessor is delivered (or `hold_back_s` passes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from im_contracts.events import (
    AgentChanged,
    AgentPresence,
    ConversationStarted,
    Event,
    ERASED_NAME,
    MessageChanged,
    MessagePosted,
    ParticipantsChanged,
    ReadMarkerMoved,
    TeamRequestChanged,
    Typing,
)
from im_contracts.frames import (
    AuthRevoked,
    Conversation,
    ConversationUpdatedBody,
    LiveBody,
    MessageCreatedBody,
    MessageUpdatedBody,
    PresenceChanged,
    ReadUpdatedBody,
    TeamRequestClaimedBody,
    TeamRequestOfferedBody,
    TeamRequestReleasedBody,
    TypingStarted,
)
from im_runtime.kafka import TransientError, is_transient
from im_runtime.logs import log
from im_runtime.mongo import field_name

from ..bus import DeliveryBus, Item, event_scope
from ..store import QueueStore, dedupe_key, message_key
from .projections import Projections

logger = logging.getLogger("im_delivery.fanout")

AUTH_REVOKED = AuthRevoked()
TEAM_FRAMES = {"offered": TeamRequestOfferedBody, "claimed": TeamRequestClaimedBody,
               "released": TeamRequestReleasedBody}


def change_key(conversation_id: str, seq: int, version: int) -> str:
    """The queue entry of a message's change to `version` (2: its first edit or its deletion)."""
    return dedupe_key("msgchg", conversation_id, seq, version)


def conversation_frame(conv: dict[str, Any], snapshot: dict[str, Any] | None = None) -> ConversationUpdatedBody:
    """`conversation.updated`: the event's snapshot with the projection's last message; without a
    snapshot (a message's update) the participants are null — unchanged — so that a message costs
    each recipient a frame of the same size whatever the thread's size. Validated once, shared by
    every recipient (`for_reader` copies it with each one's read state)."""
    base = dict(snapshot) if snapshot else {
        "id": conv["conversation_id"], "participants": None, "related": conv["related"],
        "created_by": conv["created_by"], "created_at": conv["created_at"],
        "last_seq": 0, "last_message": None, "last_message_at": None,
    }
    if conv.get("last_seq", 0) >= base.get("last_seq", 0) and conv.get("last_message") is not None:
        base.update(last_seq=conv["last_seq"], last_message=conv["last_message"],
                    last_message_at=conv["last_message_at"])
    return ConversationUpdatedBody(conversation=Conversation.model_validate(base))


def for_reader(frame: ConversationUpdatedBody, markers: dict[str, int], agent_id: str) -> ConversationUpdatedBody:
    """The `conversation.updated` one recipient gets: its own `last_read_seq` and `unread_count`
    (API.md: unread_count = last_seq - last_read_seq; a sender has read its own message)."""
    conversation = frame.conversation
    last_read = min(int(markers.get(field_name(agent_id), 0)), conversation.last_seq)
    unread = max(0, conversation.last_seq - last_read)
    return frame.model_copy(update={"conversation": conversation.model_copy(
        update={"last_read_seq": last_read, "unread_count": unread})})


def scope_of(event: Event) -> tuple[str, ...]:
    """What an event must stay in order with: its thread, else its agent or gateway."""
    match event:
        case MessagePosted() | MessageChanged():
            return ("conversation", event.tenant_id, event.message.conversation_id)
        case ConversationStarted() | ParticipantsChanged():
            return ("conversation", event.tenant_id, event.conversation.id)
        case ReadMarkerMoved() | Typing():
            return ("conversation", event.tenant_id, event.conversation_id)
        case TeamRequestChanged():
            return ("conversation", event.tenant_id, event.request.conversation_id)
        case AgentChanged() | AgentPresence():
            return ("agent", event.tenant_id, event.agent_id)
    return ("other", event.type)


class FanOut:
    def __init__(self, projections: Projections, queue: QueueStore, bus: DeliveryBus, hold_back_s: float,
                 presence_threads: int = 500, presence_partners: int = 2_000) -> None:
        self.projections = projections
        self.presence_threads = presence_threads
        self.presence_partners = presence_partners
        self.queue = queue
        self.bus = bus
        self.hold_back_s = hold_back_s
        self._waiting_since: dict[tuple[str, str], float] = {}
        # Threads for which this process parked messages: only they need a look for successors
        # (rare, so kept for the process's life; what an earlier process parked is released by
        # the overdue sweep).
        self._holding: set[tuple[str, str]] = set()

    async def handle_batch(self, items: list[Item]) -> None:
        # Topics are not ordered among each other: within a poll, take the directory and thread
        # events first so a thread's first messages find its ConversationStarted (stable sort:
        # each partition keeps its own order).
        ordered = sorted(items, key=lambda item: isinstance(item[0], MessagePosted | MessageChanged))
        # Threads (and agents, gateways) are independent: each one's events run in order, the
        # threads concurrently, so a poll costs a few MongoDB round trips, not a few per event.
        scopes: dict[tuple[str, ...], list[Item]] = {}
        for item in ordered:
            scopes.setdefault(scope_of(item[0]), []).append(item)
        async with self.bus.confirmed():  # this consuming task's records, confirmed before its commit
            outcomes = await asyncio.gather(*(self._in_order(scoped) for scoped in scopes.values()),
                                            return_exceptions=True)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:  # every scope has finished: a retry never overlaps a straggler
                raise next((f for f in failures if not is_transient(f)), failures[0])

    async def _in_order(self, items: list[Item]) -> None:
        i = 0
        while i < len(items):
            event, record = items[i]
            if isinstance(event, MessagePosted):
                run = [items[i]]
                while i + len(run) < len(items) and isinstance(items[i + len(run)][0], MessagePosted):
                    run.append(items[i + len(run)])
                done = await self.message_run(run)
                i += done
                if done:
                    continue
                event, record = items[i]
            with event_scope(event, record):
                await self.on_event(event)
            i += 1

    async def message_run(self, run: list[Item]) -> int:
        """Consecutive messages of one thread in one poll: the thread's projection is read once,
        each message that is next in order (or already delivered: a re-consumed record) is fanned
        out against it in memory, and the projection is written once at the end — two database
        commands per thread and poll instead of two per message. Returns how many were handled;
        the first message that is not (a missing predecessor, an unknown thread, a thread with
        parked messages) and the rest go one by one through `on_event`."""
        first = run[0][0]
        tenant_id, conversation_id = first.tenant_id, first.message.conversation_id
        if (tenant_id, conversation_id) in self._holding:
            return 0
        conv = await self.projections.conversation(tenant_id, conversation_id)
        if conv is None:
            return 0
        done, delivered = 0, []
        for event, record in run:
            if event.message.seq > conv["last_seq"] + 1:
                break
            with event_scope(event, record):
                conv = await self.deliver(event, conv, save=False)
            delivered.append(event)
            done += 1
        if delivered:
            await self.projections.messages_delivered(delivered)
        return done

    async def on_event(self, event: Event) -> None:
        match event:
            case MessagePosted():
                await self.on_message(event)
            case ConversationStarted() | ParticipantsChanged():
                conv = await self.projections.save_snapshot(event.tenant_id, event.conversation)
                frame = conversation_frame(conv, event.conversation.model_dump())
                key = dedupe_key("conv", event.conversation.id, event.event_id)
                markers = conv.get("read_markers") or {}
                for agent in dict.fromkeys(event.recipients):
                    await self.bus.append(event.tenant_id, agent, key, for_reader(frame, markers, agent))
            case ReadMarkerMoved():
                await self.projections.read_marker_moved(event.tenant_id, event.conversation_id,
                                                         event.agent_id, event.seq)
                frame = ReadUpdatedBody(conversation_id=event.conversation_id, agent_id=event.agent_id,
                                        seq=event.seq)
                key = dedupe_key("read", event.conversation_id, event.agent_id, event.seq)
                for agent in dict.fromkeys(event.recipients):
                    await self.bus.append(event.tenant_id, agent, key, frame)
            case MessageChanged():
                await self.on_message_changed(event)
            case TeamRequestChanged():
                # Queued like every thread frame (replayed on resume), to members who are not
                # participants too: the offer is what they see of the thread until they claim it.
                team_frame = TEAM_FRAMES[event.change](request=event.request)
                key = dedupe_key("team", event.request.conversation_id, event.event_id)
                for agent in dict.fromkeys(event.recipients):
                    await self.bus.append(event.tenant_id, agent, key, team_frame)
            case AgentChanged():
                await self.projections.save_agent(event)
                # An erased agent's entry is announced again when the erasure's job ends: every
                # frame queued by then (some were on their way at the erasure) is looked at again.
                erased = event.display_name == ERASED_NAME and not event.active
                readers = await self.projections.rename_participant(event.tenant_id, event.agent_id,
                                                                    event.display_name, every_thread=erased)
                await self.queue.rename_agent(event.tenant_id, event.agent_id, event.display_name, readers)
                if not event.active:
                    await self.live(event.tenant_id, [event.agent_id], AUTH_REVOKED)
            case AgentPresence():
                frame = PresenceChanged(agent_id=event.agent_id, status=event.status,
                                        last_seen_at=event.last_seen_at)
                others = await self.projections.co_participants(event.tenant_id, event.agent_id,
                                                                self.presence_threads, self.presence_partners)
                await self.live(event.tenant_id, sorted(others), frame)
            case Typing():
                conv = await self.projections.conversation(event.tenant_id, event.conversation_id)
                if conv is None or event.agent_id not in conv.get("participant_ids", []):
                    return  # typing in a thread one is not part of goes nowhere
                others = [a for a in conv["participant_ids"] if a != event.agent_id]
                frame = TypingStarted(conversation_id=event.conversation_id, agent_id=event.agent_id)
                await self.live(event.tenant_id, others, frame)

    async def on_message_changed(self, event: MessageChanged) -> None:
        """An edit, a deletion or a redaction, after the message itself (held until it was
        delivered): the `message.updated` frame, and the thread's `conversation.updated` for its
        participants when it was its last message. The queue writer rewrites the message's earlier
        entries (queue_writer.py); a redaction or a system line's rewording names everyone a copy
        reached, former participants too, so theirs are rewritten as well."""
        m = event.message
        conv = await self.projections.conversation(event.tenant_id, m.conversation_id)
        if conv is None or m.seq > conv["last_seq"]:
            raise TransientError("the changed message is not delivered yet")
        key = change_key(m.conversation_id, m.seq, event.version)
        frame = MessageUpdatedBody(message=m)
        updated = None
        if m.seq == conv["last_seq"]:
            conv = await self.projections.last_message_changed(event)
            updated = conversation_frame(conv)
        markers = conv.get("read_markers") or {}
        for agent in dict.fromkeys(event.recipients):
            await self.bus.append(event.tenant_id, agent, key, frame, drop_question=event.question_removed)
            # Those a redaction or rewording reaches beyond today's participants get the message's
            # new state, never the thread back in their list.
            if updated is not None and (event.change in ("edited", "deleted")
                                        or agent in conv.get("participant_ids", ())):
                await self.bus.append(event.tenant_id, agent, f"{key}:conversation", for_reader(updated, markers, agent))

    async def live(self, tenant_id: str, agent_ids: list[str], frame: LiveBody) -> None:
        """Live-only frames go straight to the gateways that hold the agent (never queued)."""
        if not agent_ids:
            return
        for agent, gateway in sorted(await self.queue.gateways_holding(tenant_id, agent_ids)):
            await self.bus.live(tenant_id, gateway, agent, frame)

    # --- messages -------------------------------------------------------------------------------

    async def on_message(self, event: MessagePosted) -> None:
        m = event.message
        conv = await self.projections.conversation(event.tenant_id, m.conversation_id)
        if conv is None:
            conv = await self._conversation_not_started(event)
        if m.seq > conv["last_seq"] + 1:
            log(logger, logging.INFO, "message held back: predecessor missing",
                conversation_id=m.conversation_id, seq=m.seq, last_seq=conv["last_seq"])
            await self.projections.hold(event)
            self._holding.add((event.tenant_id, m.conversation_id))
            return
        await self.deliver(event, conv)
        await self.release_successors(event.tenant_id, m.conversation_id)

    async def _conversation_not_started(self, event: MessagePosted) -> dict[str, Any]:
        # ConversationStarted travels on another topic and may come later: wait (pausing this
        # partition with backoff) up to hold_back_s, then go with what the message says.
        key = (event.tenant_id, event.message.conversation_id)
        since = self._waiting_since.setdefault(key, time.monotonic())
        if time.monotonic() - since < self.hold_back_s:
            raise TransientError("conversation not projected yet")
        self._waiting_since.pop(key, None)
        log(logger, logging.WARNING, "conversation never started; delivering with the message's facts",
            conversation_id=event.message.conversation_id)
        return await self.projections.assume_conversation(event)

    async def deliver(self, event: MessagePosted, conv: dict[str, Any], save: bool = True) -> dict[str, Any]:
        """Fans one message out; returns the projection as it is after it (what `save` writes)."""
        m = event.message
        if m.seq >= conv.get("last_seq", 0):
            message = m.model_dump(mode="json")
            conv = {**conv, "last_seq": m.seq, "last_message": message, "last_message_at": message["created_at"]}
        created = MessageCreatedBody(message=m)
        updated = conversation_frame(conv)
        # Sending a message moves the sender's read marker to it (API.md).
        markers = dict(conv.get("read_markers") or {})
        sender = field_name(m.sender_id)
        markers[sender] = max(int(markers.get(sender, 0)), m.seq)
        created_key = message_key(m.conversation_id, m.seq)
        for agent in dict.fromkeys(event.recipients):
            await self.bus.append(event.tenant_id, agent, created_key, created)
            await self.bus.append(event.tenant_id, agent, f"{created_key}:conversation",
                                  for_reader(updated, markers, agent))
        if save:
            await self.projections.messages_delivered([event])
        return {**conv, "read_markers": markers}

    async def release_successors(self, tenant_id: str, conversation_id: str, sweep: bool = False) -> None:
        if not sweep and (tenant_id, conversation_id) not in self._holding:
            return
        while True:
            conv = await self.projections.conversation(tenant_id, conversation_id)
            if conv is None:
                return
            nxt = await self.projections.held_next(tenant_id, conversation_id, conv["last_seq"] + 1)
            if nxt is None:
                return
            with event_scope(nxt):  # the fan-out latency counts from the message, not its release
                await self.deliver(nxt, conv)
            await self.projections.release(tenant_id, conversation_id, nxt.message.seq)

    async def release_overdue(self) -> int:
        """Held messages whose predecessor never came within hold_back_s: deliver, accept the gap."""
        overdue = await self.projections.held_too_long(self.hold_back_s)
        async with self.bus.confirmed():
            for event in overdue:
                m = event.message
                log(logger, logging.WARNING, "predecessor never came; delivering with a gap",
                    conversation_id=m.conversation_id, seq=m.seq)
                await self.projections.accept_gap(event.tenant_id, m.conversation_id, m.seq)
                await self.release_successors(event.tenant_id, m.conversation_id, sweep=True)
                await self.projections.release(event.tenant_id, m.conversation_id, m.seq)  # if already passed
        return len(overdue)
