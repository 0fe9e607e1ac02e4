"""`im-delivery-worker` / `python -m im_delivery.worker`: the fan-out worker with its health port."""

from __future__ import annotations

import uvicorn
from im_runtime.logs import configure_logging

from ..serving import exit_0_after_sigterm
from ..settings import DeliverySettings
from .app import create_app


def main() -> None:
    settings = DeliverySettings()
    configure_logging("im-delivery-worker", settings.log_level)
    exit_0_after_sigterm()
    uvicorn.run(create_app(settings), host=settings.worker_host, port=settings.worker_port,
                log_config=None, access_log=False)


if __name__ == "__main__":
    main()
