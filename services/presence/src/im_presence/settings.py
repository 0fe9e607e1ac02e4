"""The presence service's settings (env prefix IM_PRESENCE_; shared infrastructure names from CommonSettings)."""

from __future__ import annotations

from im_runtime.settings import CommonSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class PresenceSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="IM_PRESENCE_", extra="ignore", populate_by_name=True)

    # Health endpoints only: loopback unless the deployment says otherwise (0.0.0.0 in containers).
    host: str = "127.0.0.1"
    # Fixed by the ports contract: im-api 8000, gateway 8001, delivery worker 8002, presence 8003.
    port: int = 8003
    # A page reload closes and reopens within a second or two; 10 s also absorbs a gateway restart.
    offline_grace_s: float = Field(default=10.0, gt=0)
    # Gateways beat every 3 s (IM_DELIVERY_GATEWAY_HEARTBEAT_S): three missed beats mean it is gone.
    gateway_timeout_s: float = Field(default=10.0, gt=0)
    # Gateway ids change on every deploy (hostname-pid): a day after its last beat, every
    # connection it held has long been expired and every late event of it has arrived.
    gateway_forget_after_s: float = Field(default=86_400.0, gt=0)
    # How often due grace deadlines and silent gateways are checked: adds at most this to "offline".
    sweep_interval_s: float = Field(default=1.0, gt=0)
    # A gateway that restarted (its old epoch) or went silent is looked for among the owned agents'
    # connections (a scan of them) when that happens, then again this often for late connection
    # events of it, not every sweep for the day it is remembered.
    gateway_recheck_s: float = Field(default=30.0, gt=0)
    # How often the agents-by-status gauge is recounted (an aggregation over the owned agents).
    count_interval_s: float = Field(default=15.0, gt=0)
    # One group for every presence process: each owns the agents of its partitions.
    consumer_group: str = "im-presence"
    # Records per poll: a reconnect storm after a gateway restart is thousands of events at once.
    max_batch: int = Field(default=500, ge=1)
    # SIGTERM: time to finish the batch in hand and commit before uvicorn gives up.
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
