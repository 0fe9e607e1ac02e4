"""The compose stack in real containers (docker, or podman with the offline override), built and
started once for the stack tests (module scope: it is gone before the rest of the suite runs)
under a unique project name; every container, pod, network and volume of that project is
removed at the end, also on failure."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from compose_clients import stack_env
from imctl import servers as local
from imctl.compose import ComposeStack, wait_http_ready

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def compose_stack():
    ports = {name: local.free_port() for name in ("IM_API_PORT", "IM_STREAM_PORT", "IM_STREAM_PORT_2",
                                                  "KAFKA_PORT", "MONGO_PORT")}
    stack = ComposeStack(project=f"imtest{uuid.uuid4().hex[:8]}", extra_files=(HERE / "docker-compose.test.yml",),
                         say=lambda line: print(f"[compose] {line}", flush=True))
    stack.env = stack_env(ports, stack.engine)
    with stack.running():
        for port in ("IM_API_PORT", "IM_STREAM_PORT", "IM_STREAM_PORT_2"):
            wait_http_ready(f"http://127.0.0.1:{ports[port]}/readyz")
        yield stack
