"""`im-presence` / `python -m im_presence`: the presence process with /healthz /readyz /metrics on IM_PRESENCE_PORT."""

from __future__ import annotations

import uvicorn
from im_runtime.logs import configure_logging

from .app import create_app
from .settings import PresenceSettings


def main() -> None:
    settings = PresenceSettings()
    configure_logging("im-presence", settings.log_level)
    # uvicorn turns SIGTERM into the lifespan's shutdown: the consumer finishes its batch,
    # commits and leaves the group, so its partitions move at once instead of after a timeout.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )


if __name__ == "__main__":
    main()
