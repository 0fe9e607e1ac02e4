"""Kafka ACLs for Helpdesk IM's principals: each service reads and writes only its own topics and
joins only its own consumer groups (a gateway cannot write the inbox; only im-api reads the
assistance requests). `imctl topics create --acls` grants them as the admin principal.

aiokafka speaks only CreateAcls v0–v1, which Kafka 4 no longer accepts: v2 (the same fields in
the flexible encoding) is declared here with aiokafka's own protocol types.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import CompactArray, CompactString, Int8, Int16, Int32, Schema, TaggedFields
from im_contracts.topics import (
    AGENTS,
    ASSISTANCE_REQUESTS,
    CONNECTIONS,
    CONVERSATIONS,
    DEAD_LETTERS,
    DELIVERY_SIGNALS,
    GATEWAYS,
    INBOX,
    MESSAGES,
    PRESENCE,
    TYPING,
    Topic,
)

# Kafka's enumerations (org.apache.kafka.common.acl / resource).
TOPIC, GROUP = 2, 3
LITERAL = 3
READ, WRITE = 3, 4
ALLOW = 3


@dataclass(frozen=True)
class Access:
    read: tuple[Topic, ...] = ()
    write: tuple[Topic, ...] = ()
    groups: tuple[str, ...] = ()  # consumer groups (the services' default names)


# What each service does on Kafka (its settings' default group names). Producers are idempotent:
# since Kafka 3, WRITE on a topic is all an idempotent producer needs.
PRINCIPALS: dict[str, Access] = {
    "im-api": Access(read=(ASSISTANCE_REQUESTS, PRESENCE),
                     write=(MESSAGES, CONVERSATIONS, AGENTS, DEAD_LETTERS),
                     groups=("im-api-assistance",)),
    "delivery-worker": Access(read=(MESSAGES, CONVERSATIONS, AGENTS, PRESENCE, TYPING, INBOX, GATEWAYS),
                              write=(INBOX, DELIVERY_SIGNALS, DEAD_LETTERS),
                              groups=("delivery-fanout", "delivery-queue", "delivery-gateways")),
    "delivery-gateway": Access(read=(DELIVERY_SIGNALS,), write=(CONNECTIONS, TYPING, GATEWAYS)),
    "presence": Access(read=(CONNECTIONS, GATEWAYS), write=(PRESENCE, DEAD_LETTERS), groups=("im-presence",)),
    "notifier": Access(read=(MESSAGES, CONVERSATIONS, PRESENCE, AGENTS), write=(DEAD_LETTERS,),
                       groups=("im-notifier-threads", "im-notifier-agents")),
    # Not a service of ours: the help desk's services that ask for assistance (README: Kafka
    # authentication). They may write requests and nothing else.
    "assistance-producer": Access(write=(ASSISTANCE_REQUESTS,)),
}


HELP_DESK = "assistance-producer"
SERVICES = tuple(name for name in PRINCIPALS if name != HELP_DESK)  # the workloads of ours


def principal_name(service: str) -> str:
    """The SASL user of a service (what the Kubernetes manifests name, IM_KAFKA_USERNAME)."""
    return f"helpdesk-im-{service}"


def bindings(service: str, prefix: str = "", group_prefix: str = "") -> list[tuple[int, str, int]]:
    """(resource type, resource name, operation) the service is allowed."""
    access = PRINCIPALS[service]
    out = [(TOPIC, t.name(prefix), READ) for t in access.read]
    out += [(TOPIC, t.name(prefix), WRITE) for t in access.write]
    out += [(GROUP, f"{group_prefix}{g}", READ) for g in access.groups]
    return out


class CreateAclsResponse_v2(Response):
    API_KEY = 30
    API_VERSION = 2
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", CompactArray(("error_code", Int16), ("error_message", CompactString("utf-8")),
                                 ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class CreateAclsRequest_v2(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 30
    API_VERSION = 2
    RESPONSE_TYPE = CreateAclsResponse_v2
    SCHEMA = Schema(
        ("creations", CompactArray(
            ("resource_type", Int8), ("resource_name", CompactString("utf-8")), ("resource_pattern_type", Int8),
            ("principal", CompactString("utf-8")), ("host", CompactString("utf-8")), ("operation", Int8),
            ("permission_type", Int8), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class CreateAcls(Request[CreateAclsRequest_v2]):
    API_KEY = 30

    def __init__(self, creations: list[tuple]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v2]) -> CreateAclsRequest_v2:
        return request_struct_class(self._creations, {})


async def grant(admin: AIOKafkaAdminClient, prefix: str = "", group_prefix: str = "",
                services: tuple[str, ...] = tuple(PRINCIPALS)) -> int:
    """Allows each service's principal what PRINCIPALS says (idempotent: an ACL that exists is
    created again as the same ACL); the number of ACLs granted."""
    creations = [(rtype, name, LITERAL, f"User:{principal_name(service)}", "*", op, ALLOW, {})
                 for service in services for rtype, name, op in bindings(service, prefix, group_prefix)]
    response = await admin._send_request(CreateAcls(creations))  # noqa: SLF001 - aiokafka has no create_acls
    for code, message, _ in response.results:
        if code:
            raise for_code(code)(message)
    return len(creations)
