"""Entry point for im.gateways.v1: every presence process reads every heartbeat (no consumer group)."""

from __future__ import annotations

import logging

from aiokafka import ConsumerRecord
from im_contracts.events import Event, GatewayHeartbeat
from im_contracts.topics import GATEWAYS
from im_runtime.kafka import DeadLetters, is_transient
from im_runtime.logs import log
from im_runtime.reader import TopicReader

from ..service import PresenceService
from ..settings import PresenceSettings

logger = logging.getLogger("im_presence.gateways")


def heartbeat_reader(service: PresenceService, dead_letters: DeadLetters, settings: PresenceSettings) -> TopicReader:
    """Every presence process needs every beat to judge every gateway. Liveness is "heard
    recently": old beats say nothing (the store keeps the last one heard), so it reads from the end."""

    async def on_heartbeat(heartbeat: Event | None, record: ConsumerRecord) -> None:
        assert isinstance(heartbeat, GatewayHeartbeat)
        try:
            await service.on_heartbeat(heartbeat)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The next beat, a few seconds later, records it again: nothing is lost by skipping this one.
            log(logger, logging.WARNING, "heartbeat not recorded", gateway_id=heartbeat.gateway_id,
                error=type(exc).__name__)

    return TopicReader(settings, GATEWAYS, on_heartbeat, start_at="end", on_rejected=dead_letters.publish,
                       on_restart=service.heartbeats_missed)
