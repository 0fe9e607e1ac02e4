"""The notifier's settings (env prefix IM_NOTIFIER_; shared infrastructure names from CommonSettings).

What a tenant chooses (webhook, delays, digest window, bodies) is the tenant's, set over im-api's
admin endpoint; these are the deployment's: the SMTP server, the links, the timings and bounds."""

from __future__ import annotations

from im_runtime.settings import CommonSettings
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict


class NotifierSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="IM_NOTIFIER_", extra="ignore", populate_by_name=True)

    # Health endpoints only: loopback unless the deployment says otherwise (0.0.0.0 in containers).
    host: str = "127.0.0.1"
    # Next to im-api 8000, gateway 8001, delivery worker 8002, presence 8003.
    port: int = 8004
    # One group per input, each process owning some partitions; renaming one re-reads its topics.
    threads_group: str = "im-notifier-threads"  # im.messages.v1 + im.conversations.v1
    agents_group: str = "im-notifier-agents"  # im.presence.v1 + im.agents.v1
    max_records: int = Field(default=500, ge=1)

    # --- when ---
    # How often due agents are looked for: adds at most this to a notification's delay.
    sweep_interval_s: float = Field(default=1.0, gt=0)
    # Agents decided per sweep round (the rest come in the next round, oldest due first).
    sweep_batch: int = Field(default=200, ge=1)
    # A message older than this when consumed tells nobody: a new consumer group starts at the
    # topic's beginning, and days-old threads are not news (a notifier down for hours still tells).
    max_message_age_s: float = Field(default=24 * 3600.0, gt=0)
    # A tenant's settings are read at most this often (a change applies within it).
    settings_cache_s: float = Field(default=5.0, ge=0)
    # How often the previews of messages past their tenant's retention (`retention_days`) are
    # cleared: a look reads every agent of those tenants, and a limit in days needs no finer step.
    retention_interval_s: float = Field(default=3600.0, gt=0)

    # --- sending ---
    # One attempt (connect, send, answer) of a webhook or an SMTP session.
    attempt_timeout_s: float = Field(default=10.0, gt=0)
    # A claim's lease outlives its attempt by this much: a process that died mid-send leaves it,
    # and whoever sees it after the lease sends it again with the same key.
    lease_grace_s: float = Field(default=5.0, ge=0)
    max_tries: int = Field(default=6, ge=1)
    send_retry_initial_s: float = Field(default=5.0, gt=0)
    send_retry_max_s: float = Field(default=600.0, gt=0)
    # Sends in flight in this process, and per tenant (one tenant's slow receiver cannot take them all).
    max_concurrent_sends: int = Field(default=32, ge=1)
    max_concurrent_sends_per_tenant: int = Field(default=4, ge=1)
    # A claim found while those are all taken is tried again this much later (it waits in MongoDB).
    saturated_defer_s: float = Field(default=2.0, gt=0)
    # The console's link to a thread; "{conversation_id}" is replaced. Empty: no links.
    thread_url_template: str = ""

    # --- email (SMTP); no host: no email, whatever tenants choose ---
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # "starttls" (port 587), "tls" (implicit, port 465) or "none" (a local relay or mail catcher).
    smtp_security: str = Field(default="starttls", pattern="^(starttls|tls|none)$")
    smtp_from: str = "Helpdesk IM <notifications@localhost>"

    # SIGTERM: time to finish the batch in hand and the sends in flight before uvicorn gives up.
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
