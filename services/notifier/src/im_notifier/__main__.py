"""`im-notifier` / `python -m im_notifier`: the notifier process with /healthz /readyz /metrics on IM_NOTIFIER_PORT."""

from __future__ import annotations

import uvicorn
from im_runtime.logs import configure_logging

from .app import create_app
from .settings import NotifierSettings


def main() -> None:
    settings = NotifierSettings()
    configure_logging("im-notifier", settings.log_level)
    # uvicorn turns SIGTERM into the lifespan's shutdown: the consumers finish their batch and
    # leave their groups, the sends in flight write their outcome.
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
