"""The delivery service's settings (worker and gateway), read from IM_DELIVERY_* and shared IM_* names."""

from __future__ import annotations

import os
import socket

from im_runtime.settings import CommonSettings, shared
from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict


def _default_gateway_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class DeliverySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="IM_DELIVERY_", extra="ignore", populate_by_name=True)

    # --- ports (the launcher and e2e tests rely on these names) ---
    gateway_host: str = "127.0.0.1"
    stream_port: int = shared("IM_STREAM_PORT", default=8001)
    worker_host: str = "127.0.0.1"
    worker_port: int = Field(default=8002, validation_alias=AliasChoices("IM_DELIVERY_WORKER_PORT"))
    gateway_id: str = Field(default_factory=_default_gateway_id)

    # --- consumer groups (fixed names: renaming one re-reads its topics from the start) ---
    fanout_group: str = "delivery-fanout"
    queue_group: str = "delivery-queue"
    gateways_group: str = "delivery-gateways"
    # Records per poll: big enough that a queue writer allocates cursors for many entries at once.
    max_records: int = 500
    # A crashed worker's partitions move after this long; 6 s is the broker's minimum by default.
    session_timeout_ms: int = 6_000
    # Heartbeats must be well inside the session timeout (a third is Kafka's advice).
    heartbeat_interval_ms: int = 2_000
    # SIGTERM: how long the batch in hand (worker) or the sockets' handlers (gateway) may take to
    # finish before the process exits anyway; well inside Kubernetes' default 30 s grace period.
    shutdown_grace_s: float = 10.0

    # --- fan-out worker ---
    # How long a message waits for its conversation's ConversationStarted (another topic) or for a
    # missing predecessor before it is delivered anyway: outbox relays publish within seconds.
    hold_back_s: float = 10.0

    # An agent's presence change goes to the partners of its most recently active threads, at
    # most this many threads and agents: one change costs a bounded read and fan-out however many
    # threads the agent was ever in (partners of older threads see it when they load the agents).
    presence_threads_max: int = 500
    presence_partners_max: int = 2_000

    # A gateway silent this long (no GatewayHeartbeat) is gone: its connection registrations are
    # dropped so signals stop going to it. Five default heartbeats: a slow beat is not a death.
    gateway_expiry_s: float = 15.0
    # Registrations of a gateway's earlier boot are swept when the worker sees a new epoch, and
    # again this often (the sweep scans all of the gateway's registrations).
    epoch_resweep_s: float = 60.0

    # --- queue retention (pruning job) ---
    # Pruning is a sweep over every queue: once a minute keeps it cheap and the queues short.
    prune_interval_s: float = 60.0
    # Acknowledged entries are kept a week, so another device of the agent can still catch up.
    retention_s: float = 7 * 24 * 3600.0
    # An agent's queue never holds more than this; older entries go and their devices get 4409.
    queue_cap: int = 100_000
    # A device that has not acknowledged anything for this long is forgotten by the pruning job,
    # so an abandoned browser no longer holds its agent's queue back until the cap; twice the
    # retention, so a device away for a holiday still catches up.
    device_expiry_s: float = 14 * 24 * 3600.0
    # How often the pruning job applies the tenants' message retention (`retention_days`, im-api's
    # setting) to the queues and the thread previews: it reads every queue of those tenants, and a
    # limit in days needs no finer step than an hour.
    tenant_retention_interval_s: float = Field(default=3600.0, gt=0)

    # --- gateway ---
    # GatewayHeartbeat period (brief-interfaces #7): presence expires a silent gateway after a few.
    heartbeat_s: float = 3.0
    # A missed signal costs at most this much latency: every connection's queue head is checked at
    # least this often (a last resort: signals are confirmed before the writer commits, a restarted
    # signal reader wakes every connection, lost registrations are re-asserted). The heads are read
    # a slice every `safety_poll_tick_s`, so the cost per tick is the sockets held × tick / this.
    safety_poll_s: float = 30.0
    safety_poll_tick_s: float = 2.0
    # A deactivated agent's sockets close at once on the live signal; when that was missed, the
    # gateway's own check of the directory projection closes them within this long.
    revocation_check_s: float = 5.0
    # Entries per replay read / batch frame: bounds memory per connection while catching up.
    replay_batch: int = 200
    # A device's acknowledged cursor is written at most this often (all the sockets' pending acks
    # in one command), and when its socket closes. A gateway killed meanwhile loses at most this
    # much of it: the client resumes with its own cursor (one that names none gets those frames
    # again), and pruning waits a moment longer.
    ack_write_s: float = 1.0
    # A client that cannot take one frame (or batch) within this long is too slow: closed 4429.
    send_timeout_s: float = 5.0
    # Queued frames sent on one connection but not yet acknowledged on it; at the limit the gateway
    # waits (send timeout) for an ack, then closes 4429. A full replay of a busy day fits in it.
    max_unacked: int = 5_000
    # Live-only frames (presence, typing) waiting for one connection; more means it is too slow.
    live_buffer: int = 256
    # Frames a client may send (ack, typing, idle, active), per agent (all its sockets here) and
    # per tenant, as token buckets (`rate` per second, `burst` at once; 0 = unlimited), counted by
    # each gateway: past either the socket is closed 4429. A well-behaved client acks at most once
    # per server message, and what it is sent is bounded by its tenant's send limit.
    client_frame_rate_per_agent: float = 50.0
    client_frame_burst_per_agent: float = 200.0
    client_frame_rate_per_tenant: float = 5000.0
    client_frame_burst_per_tenant: float = 10000.0
    # Callers remembered per limit (least recently used forgotten first): bounds the memory.
    rate_limit_max_keys: int = 100_000
    # Sockets one gateway holds, and one agent holds on one gateway (a console per tab and device):
    # past either, a new socket is closed 4429 (the client comes back after a pause).
    max_connections: int = 20_000
    max_connections_per_agent: int = 10
    # Devices remembered per agent (each pins the queue entries it has not acknowledged): a new
    # device past this forgets the agent's least recently used one, which starts afresh if it
    # comes back (after the agent's latest acknowledgement, like any new device).
    max_devices_per_agent: int = 20
    # Closing handshake with a client that does not answer: give up after this long.
    close_timeout_s: float = 2.0
    # Ticket ids are kept this long after the ticket expires (TTL), so a replay stays refused.
    ticket_keep_s: float = 120.0
    # An agent unknown to the directory projection is refused, but one created a moment ago may
    # not be projected yet: AgentChanged goes outbox -> Kafka -> worker, about a second at worst.
    unknown_agent_wait_s: float = 2.0
    # How often the projection is re-read while waiting for a new agent (a point read by _id).
    unknown_agent_poll_s: float = 0.1
    # Device id for bearer-subprotocol clients that name none (`?device_id=` overrides it).
    default_device_id: str = "default"
    # Browser pages allowed to open the stream: their origins, comma-separated (`*`: any). A
    # handshake with an Origin header not listed is closed 4403 (another site's page cannot use
    # an agent's ticket from there); clients that send no Origin (services, CLIs) are unaffected.
    allowed_origins: str = ""

    def origin_allowed(self, origin: str) -> bool:
        allowed = {o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()}
        return "*" in allowed or origin.rstrip("/") in allowed
