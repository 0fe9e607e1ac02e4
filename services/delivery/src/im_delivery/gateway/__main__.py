"""`im-delivery-gateway` / `python -m im_delivery.gateway`: the WebSocket stream on IM_STREAM_PORT."""

from __future__ import annotations

import uvicorn
from im_runtime.logs import configure_logging

from ..serving import exit_0_after_sigterm, hide_query_strings
from ..settings import DeliverySettings
from .app import create_app
from .direct import DirectStream
from .protocol import StreamProtocol


def main() -> None:
    settings = DeliverySettings()
    configure_logging("im-delivery-gateway", settings.log_level)
    hide_query_strings()
    exit_0_after_sigterm()
    uvicorn.run(
        # Sockets skip FastAPI's per-request machinery: ~12 KiB less per idle socket (direct.py).
        DirectStream(create_app(settings)), host=settings.gateway_host, port=settings.stream_port, log_config=None,
        # uvicorn's sans-I/O WebSocket protocol (no tasks per socket), with the close frame let
        # through to a client that stopped reading (protocol.py).
        # No access log: our own log lines name the connection, never the URL (it carries the ticket).
        access_log=False, ws=StreamProtocol,
        # No proxy in front is trusted (as in im-api), and its middleware is one less layer per socket.
        proxy_headers=False,
        # Frames from clients are tiny (ack, typing): a 64 KiB cap bounds what one can make us buffer.
        ws_max_size=64 * 1024,
        # Compression keeps a zlib context per socket (~300 KiB); an idle socket must stay small.
        ws_per_message_deflate=False,
        # Clients that vanish without a close are found by ping within this long.
        ws_ping_interval=20.0, ws_ping_timeout=20.0,
        # SIGTERM: sockets get 1012 at once; this bounds the wait for handlers to finish.
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )


if __name__ == "__main__":
    main()
