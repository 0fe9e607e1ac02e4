"""im-api settings: everything read from IM_API_* (plus the shared IM_* names of CommonSettings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from im_runtime.settings import CommonSettings


class ApiSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="IM_API_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"  # loopback by default: a deployment opts in to wider binding
    port: int = 8000  # the port contract of the launcher and e2e tests
    # How long an idle HTTP connection stays open. Longer than the clients' and load balancers'
    # own idle expiry (httpx 5 s, browsers and most balancers up to 60 s): when the server closed
    # first, a request sent on the connection at that moment failed with a connection reset.
    keep_alive_s: int = 75
    # 64 KiB: a 10,000-char body in 4-byte UTF-8 plus JSON escaping still fits with room to spare.
    max_request_bytes: int = 64 * 1024
    # Where clients open the WebSocket (the delivery gateway); the ticket is appended.
    stream_public_url: str = "ws://127.0.0.1:8001/v1/stream"
    # API.md: a ticket is valid 30 s — long enough for a reconnect round-trip, short if leaked.
    ticket_ttl_s: float = 30.0
    # Page sizes: 50 is a screenful of history/threads; 200 bounds one query's work.
    default_page_size: int = 50
    max_page_size: int = 200
    # Directory rows one GET /v1/agents may read, whatever the tenant's size or how many are
    # online; a page ends early (next_cursor set) where this runs out.
    agent_list_scan_max: int = 2_000
    # Threads the unread badge counts (the agent's most recently active ones), and threads whose
    # participants receive an agent's presence changes (delivery has its own setting).
    unread_scan_max: int = 1_000
    # Agents in one thread, at every door (start, add, assistance requests). Every message costs a
    # queue entry per participant and each thread change a record naming them all: unbounded, one
    # thread could outgrow Kafka's record limit and make every message cost thousands of writes.
    max_participants: int = 100
    # The largest Kafka record a change may need (key, value and headers): checked before anything
    # is written, so no outbox record is ever too large to publish. Keep it at or below the
    # topics' max.message.bytes and the producer's max_request_size (both 1 MiB by default).
    max_record_bytes: int = 1_000_000
    # Rate limits (token buckets: `rate` per second sustained, `burst` at once; 0 = unlimited),
    # counted by each im-api process. Sends are posts and thread starts. An agent types a message
    # every few seconds at most; a tenant's limit keeps one tenant below what the stack serves,
    # so the others are not slowed (README, Operating: Limits).
    send_rate_per_agent: float = 5.0
    send_burst_per_agent: float = 20.0
    send_rate_per_tenant: float = 50.0
    send_burst_per_tenant: float = 200.0
    # A ticket opens one WebSocket: a console needs one per (re)connect.
    ticket_rate_per_agent: float = 1.0
    ticket_burst_per_agent: float = 10.0
    ticket_rate_per_tenant: float = 50.0
    ticket_burst_per_tenant: float = 200.0
    # Callers remembered per limit (least recently used forgotten first): bounds the memory.
    rate_limit_max_keys: int = 100_000
    # An agent token is checked against the directory, whose answers each process remembers with
    # the version of the agent's directory bucket; a tenant's versions are read again this often, so
    # a deactivation made through another process is refused within it (0: read every time).
    directory_recheck_s: float = Field(default=1.0, ge=0)
    directory_memory_max: int = Field(default=100_000, ge=1)  # answers (and tenants) remembered
    # Group commit: at most this many sends in one MongoDB transaction (bounds txn size).
    commit_batch_max: int = 256
    # Tenants whose group commits run at once (one transaction per tenant, tenants served round
    # robin): a tenant flooding this process delays another's send by at most one turn.
    commit_lanes: int = Field(default=4, ge=1)
    # Outbox relay: 16 shards lets up to 16 im-api processes share publishing.
    outbox_shards: int = 16
    # A lease outlives a few missed renewals; a dead holder's shards move after this long.
    outbox_lease_ttl_s: float = 10.0
    outbox_lease_renew_s: float = 3.0  # a third of the TTL: two renewals may fail before expiry
    # Records written by other processes are found at least this often (local commits wake at once).
    outbox_poll_s: float = 1.0
    outbox_batch: int = 500  # records published per shard per round (one produce burst)
    # Sent records are kept a week for forensics/replay, then expire by TTL index.
    outbox_retention_s: int = 7 * 24 * 3600
    # How long one produce burst may take before the producer is rebuilt (Kafka down).
    outbox_publish_timeout_s: float = 30.0
    # How often the presence consumer looks for the topic (or new partitions) in the metadata.
    presence_metadata_refresh_s: float = 5.0
    # Readiness probe: a dependency that answers slower than this counts as down.
    readiness_timeout_s: float = 2.0
    # SIGTERM: in-flight requests get this long to finish before uvicorn closes them.
    shutdown_grace_s: float = 10.0
    # Assistance requests (helpdesk.assistance-requests.v1): one consumer group for every im-api.
    assistance_group: str = "im-api-assistance"
    # Records per poll: each opens/reuses a thread and posts, so a small batch keeps commits frequent.
    assistance_max_batch: int = 50
    # Teams: members per team (an offer's record names each, like a thread's participants) and
    # teams per tenant (GET /v1/teams lists them all).
    team_members_max: int = Field(default=500, ge=1)
    teams_max: int = Field(default=500, ge=1)
    # How often each im-api looks for team requests nobody claimed in time, and how many it
    # escalates per look (the rest wait for the next).
    team_escalation_interval_s: float = Field(default=5.0, gt=0)
    team_escalation_batch: int = Field(default=100, ge=1)
    # A request whose escalation failed is looked at again this much later (behind the others).
    team_escalation_retry_s: float = Field(default=60.0, gt=0)
    # Erasing an agent (POST /v1/admin/agents/{id}/erase): how often each im-api works on the
    # running erasures, and how many items (messages, system lines) one round handles per erasure.
    erasure_interval_s: float = Field(default=2.0, gt=0)
    erasure_batch: int = Field(default=100, ge=1)
    # A round's hold on an erasure: another im-api takes it over after this if the holder died.
    erasure_lease_s: float = Field(default=60.0, gt=0)
    # Message retention (a tenant's `retention_days`): how often the job looks for messages past
    # their tenant's limit. A limit is in days: a round every few seconds is plenty.
    retention_interval_s: float = Field(default=10.0, gt=0)
    # Messages (and the tenant's sent outbox records) one round deletes, across all tenants: a small
    # round never holds MongoDB for long, and 500 every 10 s still clears 4 million messages a day.
    retention_batch: int = Field(default=500, ge=1)
    # One im-api process runs the rounds at a time, renewing its lease each round; one that dies
    # holding it is replaced after this long. Keep it a few intervals long.
    retention_lease_s: float = Field(default=60.0, gt=0)
    # The agent console's built assets (clients/console/dist), served under /console/ from this
    # origin with a Content-Security-Policy; empty = not served (e.g. a static service does it).
    console_dir: str = ""
    # DEVELOPMENT ONLY: POST /dev/signin mints a token for any tenant and agent (and creates the
    # agent), so a newcomer can try the console. `make run` turns it on; compose and Kubernetes never.
    dev_signin: bool = False
    # How long a development token lives (the console asks for a new one on a 401).
    dev_token_ttl_s: int = 8 * 3600
