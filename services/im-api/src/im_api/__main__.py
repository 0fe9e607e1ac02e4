"""`im-api` / `python -m im_api`: uvicorn on IM_API_HOST:IM_API_PORT with a graceful SIGTERM."""

from __future__ import annotations

import uvicorn
from im_runtime.logs import configure_logging

from .app import create_app
from .settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    configure_logging("im-api", settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ws="none",  # WebSockets live in the delivery gateway
        proxy_headers=False,  # never trust client-supplied forwarding headers by default
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_keep_alive=settings.keep_alive_s,
        # SIGTERM: stop accepting, let in-flight requests finish, then the lifespan flushes the outbox.
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
