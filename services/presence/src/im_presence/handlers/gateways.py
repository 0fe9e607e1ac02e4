"""Entry point for im.gateways.v1: every presence process reads every heartbeat (no consumer group)."""

from __future__ import annotations

import logging
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from im_contracts.codec import RejectedRecord, decode_record
from im_contracts.events import GatewayHeartbeat
from im_contracts.topics import GATEWAYS
from im_runtime.kafka import DeadLetters, is_transient
from im_runtime.logs import log

from ..service import PresenceService
from ..settings import PresenceSettings

logger = logging.getLogger("im_presence.gateways")


async def _raw(msg: Any) -> None:
    return None  # decoded below with the contract, to dead-letter what is malformed


def register_heartbeats(
    broker: KafkaBroker, service: PresenceService, dead_letters: DeadLetters, settings: PresenceSettings
) -> None:
    subscriber = broker.subscriber(
        GATEWAYS.name(settings.topic_prefix),
        group_id=None,  # every process needs every beat to judge every gateway
        # Liveness is "heard recently": old beats say nothing; the store keeps the last one heard.
        auto_offset_reset="latest",
        ack_policy=AckPolicy.MANUAL,
        decoder=_raw,
    )

    @subscriber
    async def on_heartbeat(msg: KafkaMessage) -> None:
        record = msg.raw_message
        try:
            heartbeat = decode_record(GATEWAYS, record.value)
        except RejectedRecord as rejected:
            await dead_letters.publish(record, rejected)
            return
        assert isinstance(heartbeat, GatewayHeartbeat)
        try:
            await service.on_heartbeat(heartbeat)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The next beat, a few seconds later, records it again: nothing is lost by skipping this one.
            log(logger, logging.WARNING, "heartbeat not recorded", gateway_id=heartbeat.gateway_id,
                error=type(exc).__name__)
