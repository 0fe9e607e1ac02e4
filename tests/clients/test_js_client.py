"""clients/js against the real stack: its Node tests (clients/js/test/) drive im-api and the
gateway through the library exactly as a console does; this test starts the stack and lets them
SIGKILL and restart the gateway mid-conversation through a small control endpoint."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from imctl.ready import NotReady, wait_ready_blocking
from imctl.servers import free_port
from support.stack import start_stack

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "js"
TENANT = "acme"


def node() -> str:
    path = shutil.which("node")
    assert path, "node is required (Node.js 20+): `make test` installs the client's packages with npm"
    return path


@pytest.mark.unit
def test_the_clients_types_are_generated_from_the_committed_contracts():
    """clients/js/src/generated/ is what contracts/generated/ (frames + OpenAPI) make today."""
    proc = subprocess.run([node(), "scripts/generate-types.mjs", "--check"], cwd=CLIENT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class Control:
    """POST /restart-gateway: SIGKILL the gateway process, start a new one on the same port, ready."""

    def __init__(self, services, stack) -> None:
        self.services, self.stack = services, stack
        self.restarts = 0

    def restart_gateway(self) -> None:
        old = self.stack.procs["gateway0"]
        old.kill()
        new = self.services.start("gateway0", ["-m", "im_delivery.gateway"], old.env, old.ready_url)
        self.stack.procs["gateway0"] = new
        try:
            wait_ready_blocking(new.ready_url, 60, alive=lambda: new.proc.poll() is None, interval=0.1)
        except NotReady as exc:
            raise RuntimeError(f"the restarted gateway never became ready: {exc}\n{new.tail()}") from None
        self.restarts += 1

    def serve(self) -> ThreadingHTTPServer:
        control = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                if self.path != "/restart-gateway":
                    self.send_error(404)
                    return
                try:
                    control.restart_gateway()
                except Exception as exc:  # noqa: BLE001 - reported to the Node test
                    self.send_error(500, str(exc)[:200])
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.mark.e2e
@pytest.mark.timeout(420)
async def test_the_js_client_library_against_the_real_stack(services, service_env, kafka_topics, jwt_secret):
    env = {**service_env, "IM_DELIVERY_SAFETY_POLL_S": "1.0", "IM_DELIVERY_HEARTBEAT_S": "1.0",
           "IM_RETRY_INITIAL_S": "0.05", "IM_RETRY_MAX_S": "0.5", "IM_LOG_LEVEL": "WARNING"}
    stack = await start_stack(services, env, jwt_secret)
    admin = stack.client(stack.token(TENANT, "root", "admin"))
    async with admin:
        for agent in ("ana", "ben"):
            r = await admin.put(f"/v1/agents/{agent}", json={"display_name": agent.capitalize()})
            assert r.status_code == 200, r.text
    async with stack.client(stack.token("other", "root", "admin")) as other:
        assert (await other.put("/v1/agents/zed", json={"display_name": "Zed"})).status_code == 200
    control = Control(services, stack)
    server = control.serve()
    try:
        proc = await asyncio.create_subprocess_exec(
            node(), "--experimental-websocket", "--test", "--test-reporter=spec",
            *(os.environ.get("IM_TEST_JS_ARGS", "").split()), *sorted(str(p) for p in (CLIENT / "dist" / "test").glob("*.test.js")),
            cwd=CLIENT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "IM_TEST_API_URL": stack.api_url, "IM_TEST_JWT_SECRET": jwt_secret,
                 "IM_TEST_CONTROL_URL": f"http://127.0.0.1:{server.server_address[1]}", "IM_TEST_TENANT": TENANT})
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=360)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            pytest.fail("the Node tests did not finish in 360 s:\n" + out.decode(errors="replace")[-6000:])
    finally:
        server.shutdown()
    text = out.decode(errors="replace")
    print(text)
    assert proc.returncode == 0, text[-8000:]
    counts = dict(re.findall(r"^ℹ (tests|pass|fail|cancelled|skipped|todo) (\d+)$", text, re.M))
    assert counts.get("tests") == counts.get("pass") and int(counts["pass"]) > 0, counts
    assert counts["fail"] == counts["cancelled"] == counts["skipped"] == counts["todo"] == "0", counts
    assert control.restarts == 1, "the gateway was SIGKILLed and restarted mid-conversation"
