"""Entry point for helpdesk.assistance-requests.v1: authenticates each record, then hands it to the rules."""

from __future__ import annotations


from aiokafka import ConsumerRecord
from im_contracts.codec import RejectedRecord, header
from im_contracts.events import AssistanceRequested, Event
from im_contracts.topics import ASSISTANCE_REQUESTS
from im_runtime.auth import AuthError, TokenVerifier
from im_runtime.kafka import DeadLetters, Subscription
from prometheus_client import Counter

from ..assistance import Assistance, Source
from ..settings import ApiSettings

PROCESSED = Counter("im_api_assistance_requests_total", "Assistance requests processed (incl. duplicates)")


def service_token_check(verifier: TokenVerifier):
    """The record must carry `authorization: Bearer <JWT>` of a service of the request's tenant."""

    def check(record: ConsumerRecord, event: Event) -> None:
        value = header(record.headers, "authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RejectedRecord("unauthorized", "no authorization: Bearer header", event.tenant_id)
        try:
            principal = verifier.verify_for_kafka(token.strip())
        except AuthError as exc:
            raise RejectedRecord("unauthorized", exc.message, event.tenant_id) from None
        if principal.role != "service":
            raise RejectedRecord("unauthorized", f"a {principal.role} token may not request assistance",
                                 event.tenant_id)
        if principal.tenant_id != event.tenant_id:
            raise RejectedRecord("unauthorized", "the token's tenant is not the request's tenant_id",
                                 event.tenant_id)

    return check


def token_tenant(verifier: TokenVerifier):
    """The tenant of the record's verified token, or None: where a rejected record is filed (a
    record without valid credentials is not filed under the tenant it claims, whose admins would
    otherwise see, and be blamed for, what anyone can write on the topic)."""

    def tenant(record: ConsumerRecord) -> str | None:
        scheme, _, token = (header(record.headers, "authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            return verifier.verify_for_kafka(token.strip()).tenant_id
        except AuthError:
            return None

    return tenant


def assistance_subscription(assistance: Assistance, verifier: TokenVerifier, dead_letters: DeadLetters,
                            settings: ApiSettings) -> Subscription:
    async def on_request(event: Event, record: ConsumerRecord) -> None:
        assert isinstance(event, AssistanceRequested)  # the topic carries only this event type
        await assistance.handle(event, Source(record.topic, record.partition, record.offset))
        PROCESSED.inc()

    return Subscription(
        name="im-api-assistance",
        topics=[ASSISTANCE_REQUESTS],
        # The topic prefix namespaces the group too (empty in production: "im-api-assistance").
        group_id=f"{settings.topic_prefix}{settings.assistance_group}",
        handle=on_request,
        dead_letters=dead_letters,
        settings=settings,
        max_records=settings.assistance_max_batch,
        precheck=service_token_check(verifier),
        verified_tenant=token_tenant(verifier),
    )
