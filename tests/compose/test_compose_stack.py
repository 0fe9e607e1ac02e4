"""The compose stack for real: built images, container networking, two gateways, crashes and
restarts — everything through the ports the stack publishes, as an operator's clients would.

One stack per session (conftest.py). Each crash test sends messages in two threads while a
service's main process is SIGKILLed from the host (or a broker container is restarted), keeps
sending through the outage, and then checks that every accepted message reached every recipient,
on either gateway, exactly once and in order, and that the history holds seq 1..n with no gap.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pymongo
import pytest
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from compose_clients import (
    Inbox,
    Tenant,
    broker_addresses,
    kafka_client_env,
    kafka_settings,
)
from im_contracts.topics import ASSISTANCE_REQUESTS, INBOX
from im_runtime.kafka import client_options
from imctl import servers as local
from imctl.compose import APP_SERVICES
from playwright.async_api import async_playwright, expect
from pymongo.errors import OperationFailure
from support.wait import eventually

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

SECOND_GATEWAY = "delivery-gateway-2"
DELIVERY_TIMEOUT_S = 90
CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by `make setup` (Playwright's download cannot work here)


def test_the_stack_comes_up_from_the_compose_files_and_every_service_reports_ready(compose_stack):
    env = compose_stack.env
    for port_key in ("IM_API_PORT", "IM_STREAM_PORT", "IM_STREAM_PORT_2"):
        r = httpx.get(f"http://127.0.0.1:{env[port_key]}/readyz", timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "ready", (port_key, r.text)
    for service in ("kafka", "mongo", *APP_SERVICES, SECOND_GATEWAY):
        (name,) = compose_stack.containers(service)
        assert compose_stack.healthy(name), compose_stack.logs([name])
    (topics,) = compose_stack.containers("topics")
    state = compose_stack.container_tool("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", topics)
    assert state.stdout.split() == ["exited", "0"]


async def test_the_walking_path_works_through_the_published_ports(compose_stack):
    env = compose_stack.env
    acme = Tenant(env, "walk" + uuid.uuid4().hex[:6])
    await acme.add_agents("alice", "bob", "carol")
    async with Inbox(acme, "bob") as bob, Inbox(acme, "carol", port_key="IM_STREAM_PORT_2") as carol:
        conv = await acme.thread("alice", "bob", "carol", ticket="42")
        sent = await acme.send("alice", conv, "hello over containers", "w1")
        await eventually(lambda: bob.of(conv) and carol.of(conv), timeout=60)
        assert bob.of(conv)[0]["id"] == sent["id"] == carol.of(conv)[0]["id"]

        # Kafka as the host sees it: metadata names the published port, not the container's name.
        bootstrap = f"127.0.0.1:{env['KAFKA_PORT']}"
        producer_env = kafka_client_env(env, "assistance-producer")
        assert await broker_addresses(bootstrap, producer_env) == [("127.0.0.1", int(env["KAFKA_PORT"]))]

        # An assistance request from a Kafka client outside the containers (the host), as the help
        # desk's producer principal: `imctl assist` publishes with the service token it mints.
        published = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "imctl", "assist", "--bootstrap", bootstrap, "--tenant", acme.tenant,
             "--from", "alice", "--to", "bob", "--ticket", "777", "need help with 777"],
            env={**os.environ, **producer_env, "IM_JWT_SECRET": env["IM_JWT_SECRET"]},
            capture_output=True, text=True, timeout=60)
        assert published.returncode == 0, published.stderr
        await eventually(lambda: [m for m in bob.messages if m["body"] == "need help with 777"], timeout=60,
                         message="the assistance request's message never reached bob")
        (helped,) = [m for m in bob.messages if m["body"] == "need help with 777"]
        assert helped["sender_id"] == "alice" and helped["conversation_id"] != conv


async def test_kafka_and_mongodb_let_in_only_clients_with_credentials_and_only_to_what_their_acls_allow(
        compose_stack):
    """Through the published ports, as an outsider would try: Kafka without credentials or with a
    wrong password gets no metadata; the help desk's producer principal may write assistance
    requests but not the inbox nor read the requests back; MongoDB answers nothing but a ping
    without a user, and the services' user reaches its own database only."""
    env = compose_stack.env
    bootstrap = f"127.0.0.1:{env['KAFKA_PORT']}"

    # Kafka's client listener speaks SASL only: kcat over plain TCP gets no metadata at all.
    plain = await asyncio.to_thread(subprocess.run, ["kcat", "-L", "-m", "10", "-b", bootstrap],
                                    capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0 and "Failed to acquire metadata" in plain.stderr, plain.stderr
    assert not await asyncio.to_thread(local.kafka_metadata_ok, bootstrap, 10.0, None)
    assert not await asyncio.to_thread(local.kafka_metadata_ok, bootstrap, 10.0,
                                       ("helpdesk-im-im-api", "not-the-password-0123"))
    assert await asyncio.to_thread(local.kafka_metadata_ok, bootstrap, 10.0,
                                   ("helpdesk-im-im-api", env["IM_KAFKA_PASSWORD_IM_API"]))

    options = client_options(kafka_settings(bootstrap, kafka_client_env(env, "assistance-producer")))
    producer = AIOKafkaProducer(**options, request_timeout_ms=15_000)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(INBOX.name(), b"{}", key=b"acme:x")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(ASSISTANCE_REQUESTS.name(), **options, group_id="im-api-assistance",
                                auto_offset_reset="earliest")
    with pytest.raises((TopicAuthorizationFailedError, GroupAuthorizationFailedError)):
        await consumer.start()
        await consumer.getmany(timeout_ms=10_000)
    await consumer.stop()

    # The topics step granted each principal its ACLs as the admin.
    (topics,) = compose_stack.containers("topics")
    granted = compose_stack.container_tool("logs", topics).stderr + compose_stack.container_tool("logs", topics).stdout
    assert "ACLs granted to helpdesk-im-im-api" in granted, granted[-2000:]

    def mongo(credentials: str = "") -> pymongo.MongoClient:
        return pymongo.MongoClient(f"mongodb://{credentials}127.0.0.1:{env['MONGO_PORT']}/?directConnection=true"
                                   "&authSource=admin", serverSelectionTimeoutMS=10_000)

    def mongo_checks() -> None:
        with mongo() as anonymous:
            anonymous.admin.command("ping")  # the handshake's ping needs no user; nothing else does
            with pytest.raises(OperationFailure) as refused:
                anonymous.helpdesk_im.list_collection_names()
            assert refused.value.code == 13, refused.value  # Unauthorized
        with mongo("helpdesk-im:not-the-password-0123@") as wrong, pytest.raises(OperationFailure) as refused:
            wrong.helpdesk_im.list_collection_names()
        assert refused.value.code == 18, refused.value  # AuthenticationFailed
        with mongo(f"helpdesk-im:{env['IM_MONGO_PASSWORD']}@") as services:
            assert "messages" in services.helpdesk_im.list_collection_names()
            with pytest.raises(OperationFailure) as refused:
                services.other_database.things.insert_one({"x": 1})
            assert refused.value.code == 13, refused.value

    await asyncio.to_thread(mongo_checks)


async def test_the_console_built_into_the_image_is_served_and_works_in_a_browser(compose_stack):
    """The Dockerfile's console stage: im-api serves the assets under a Content-Security-Policy, an
    agent signs in with a token (the development sign-in is off in compose), a message reaches the
    console live through the gateway, which lets the console's origin in and no other."""
    env = compose_stack.env
    api = f"http://127.0.0.1:{env['IM_API_PORT']}"
    acme = Tenant(env, "desk" + uuid.uuid4().hex[:6])
    await acme.add_agents("ana", "ben")
    async with httpx.AsyncClient(base_url=api, timeout=10) as http:
        page = await http.get("/console/")
        assert page.status_code == 200 and "<im-console>" in page.text
        assert f"connect-src 'self' ws://127.0.0.1:{env['IM_STREAM_PORT']}" in page.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="(/console/assets/[^"]+)"', page.text)
        assert assets
        for asset in assets:
            r = await http.get(asset)
            assert r.status_code == 200 and "immutable" in r.headers["cache-control"], asset
        signin = await http.post("/dev/signin", json={"tenant_id": acme.tenant, "agent_id": "mallory"})
        assert signin.status_code == 404, "the development sign-in must stay off in compose"

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            browser_page = await (await browser.new_context()).new_page()
            errors: list[str] = []  # page errors and console errors (a CSP refusal is one of those)
            browser_page.on("pageerror", lambda e: errors.append(str(e)))
            browser_page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await browser_page.goto(f"{api}/console/")
            await browser_page.locator("#token-form input[name=token]").fill(acme.token("ben"))
            await browser_page.locator("#token-form button[type=submit]").click()
            console = browser_page.locator("im-console")
            await expect(browser_page.locator("#page-im")).to_be_visible()  # signed in
            await expect(browser_page.locator("#signin")).to_be_hidden()
            conv = await acme.thread("ana", "ben", ticket="77")
            await acme.send("ana", conv, "from a container to a browser", "c1")
            await expect(console.locator("ol li button", has_text="from a container to a browser")).to_be_visible(
                timeout=60_000)
            await expect(browser_page.locator("nav im-unread-badge .badge")).to_have_text("1")
            assert errors == []
        finally:
            await browser.close()

    # A page of another site cannot open the stream, even with a valid agent's credentials.
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with websockets.connect(f"ws://127.0.0.1:{env['IM_STREAM_PORT']}/v1/stream?device_id=evil",
                                      subprotocols=["im.v1", f"bearer.{acme.token('ben')}"],
                                      origin="http://evil.example", open_timeout=10) as ws:
            await asyncio.wait_for(ws.recv(), timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_agents_on_either_gateway_receive_every_message_of_their_threads(compose_stack):
    acme = Tenant(compose_stack.env, "scale" + uuid.uuid4().hex[:6])
    agents = ["ann", "ben", "cat", "dan"]
    await acme.add_agents(*agents)
    ports = ["IM_STREAM_PORT", "IM_STREAM_PORT_2", "IM_STREAM_PORT", "IM_STREAM_PORT_2"]
    inboxes = [Inbox(acme, agent, port) for agent, port in zip(agents, ports, strict=True)]
    for inbox in inboxes:
        await inbox.__aenter__()
    try:
        group = await acme.thread("ann", "ben", "cat", "dan")
        pair = await acme.thread("ben", "dan")  # both on the second gateway
        sent = [await acme.send(agents[i % 4], group, f"group {i}", f"g{i}") for i in range(8)]
        sent_pair = [await acme.send("dan", pair, f"pair {i}", f"p{i}") for i in range(4)]
        want = [m["id"] for m in sent]
        await eventually(lambda: all(len(i.of(group)) >= len(want) for i in inboxes), timeout=60,
                         message=lambda: str({i.agent: len(i.of(group)) for i in inboxes}))
        for inbox in inboxes:
            assert [m["id"] for m in inbox.of(group)] == want, inbox.agent
        await eventually(lambda: all(len(i.of(pair)) >= 4 for i in (inboxes[1], inboxes[3])), timeout=60)
        for inbox in (inboxes[1], inboxes[3]):
            assert [m["id"] for m in inbox.of(pair)] == [m["id"] for m in sent_pair]
        assert inboxes[0].of(pair) == [] and inboxes[2].of(pair) == []
    finally:
        for inbox in inboxes:
            await inbox.__aexit__(None, None, None)


# --- crashes and restarts under load -------------------------------------------------------------


async def kill_main_process(stack, service: str) -> None:
    """SIGKILL the container's main process from the host, as a crash would; returns once the
    restart policy has brought it back and its healthcheck passes."""
    name = stack.container(service)
    pid = stack.main_pid(name)
    assert pid > 0, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    await eventually(lambda: asyncio.to_thread(lambda: stack.main_pid(name) not in (0, pid)), timeout=60,
                     interval=0.2, message=f"{name} was not restarted by its restart policy")
    await asyncio.to_thread(stack.wait_healthy, (service,), 120)
    print(f"{name}: back and healthy {time.monotonic() - killed:.1f}s after SIGKILL")


async def restart_container(stack, service: str) -> None:
    await asyncio.to_thread(_restart_container, stack, service)


def _restart_container(stack, service: str) -> None:
    name = stack.container(service)
    began = time.monotonic()
    stack.container_tool("restart", name, timeout=120)
    restarted = time.monotonic()
    stack.wait_healthy((service,), timeout=120)
    print(f"{name}: restarted in {restarted - began:.1f}s, healthy {time.monotonic() - restarted:.1f}s later")


async def load_through(stack, outage, per_thread: int = 16, outage_after: int = 4) -> Tenant:
    """Two threads, each sent to by its own sender, with recipients on both gateways; `outage`
    runs (in a thread) once `outage_after` messages of each are accepted, while sending goes on;
    two more messages per thread after it is over. Then: every accepted message exactly once,
    in order, at every recipient; the history is gap-free."""
    acme = Tenant(stack.env, "load" + uuid.uuid4().hex[:6])
    await acme.add_agents("alice", "bob", "carol", "dave")
    one = await acme.thread("alice", "bob", "carol")
    two = await acme.thread("dave", "bob", "carol")
    accepted: dict[str, list[dict]] = {one: [], two: []}
    started = asyncio.Event()

    async def sender(agent: str, conv: str, count: int, first: int = 0) -> None:
        for i in range(first, first + count):
            accepted[conv].append(await acme.send(agent, conv, f"{agent} {i}", f"{conv}-{i}"))
            if all(len(a) >= outage_after for a in accepted.values()):
                started.set()

    async with Inbox(acme, "bob") as bob, Inbox(acme, "carol", port_key="IM_STREAM_PORT_2") as carol:
        senders = asyncio.ensure_future(
            asyncio.gather(sender("alice", one, per_thread), sender("dave", two, per_thread)))
        waiting = asyncio.ensure_future(started.wait())
        await asyncio.wait({senders, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if senders.done():
            senders.result()  # a sender that failed before the outage: its error, not a hang
        began = time.monotonic()
        await outage()
        await senders
        await asyncio.gather(sender("alice", one, 2, per_thread), sender("dave", two, 2, per_thread))
        sent = time.monotonic()

        total = per_thread + 2
        for conv, inbox in ((c, i) for c in (one, two) for i in (bob, carol)):
            await eventually(lambda: len(inbox.of(conv)) >= total, timeout=DELIVERY_TIMEOUT_S,
                             message=lambda: f"{inbox.agent} got {len(inbox.of(conv))} of {total}")
        print(f"all accepted {sent - began:.1f}s after the outage began, all delivered "
              f"{time.monotonic() - sent:.1f}s later")
        for conv in (one, two):
            want = [m["id"] for m in accepted[conv]]
            assert [m["seq"] for m in accepted[conv]] == list(range(1, total + 1))
            for inbox in (bob, carol):
                assert [m["id"] for m in inbox.of(conv)] == want, f"{inbox.agent}: exactly once, in order"
            history = await acme.history("bob", conv)
            assert [m["id"] for m in history] == want, "the history holds each accepted message once"
    return acme


@pytest.mark.parametrize("service", ["im-api", "delivery-worker", "delivery-gateway", "presence"])
async def test_a_service_process_killed_with_sigkill_comes_back_and_no_message_is_lost_or_repeated(
        compose_stack, service):
    acme = await load_through(compose_stack, lambda: kill_main_process(compose_stack, service))
    if service == "presence":
        # The restarted presence process still follows connections: a new device shows online.
        await acme.add_agents("erin")
        async with Inbox(acme, "erin", port_key="IM_STREAM_PORT_2"):
            await eventually(lambda: _is(acme.presence("alice", "erin"), "online"), timeout=60,
                             message="erin never showed online after presence restarted")


@pytest.mark.parametrize("service", ["kafka", "mongo"])
async def test_restarting_a_broker_container_under_load_loses_and_repeats_nothing(compose_stack, service):
    await load_through(compose_stack, lambda: restart_container(compose_stack, service))


async def _is(status, want: str) -> bool:
    return (await status) == want


async def test_services_that_start_before_kafka_and_mongodb_wait_for_them_and_then_serve(compose_stack):
    """What podman-compose's ignored `service_healthy` leads to: services starting first."""
    brokers = [compose_stack.container(s) for s in ("kafka", "mongo")]
    compose_stack.container_tool("stop", *brokers, timeout=120)
    try:
        for service in APP_SERVICES:
            name = compose_stack.container(service)
            pid = compose_stack.main_pid(name)
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: compose_stack.main_pid(name) not in (0, pid), timeout=60, interval=0.2,
                             message=f"{name} was not restarted")
        # Started again with both brokers away: waiting for them, so not ready yet.
        assert await asyncio.to_thread(_readyz, compose_stack.env["IM_API_PORT"]) != 200
        restarts = _restart_counts(compose_stack)
    finally:
        compose_stack.container_tool("start", *brokers, timeout=120)
    await asyncio.to_thread(compose_stack.wait_healthy, ("kafka", "mongo", *APP_SERVICES), 180)
    # They waited (start_with_retry) instead of exiting and being restarted again by the policy.
    assert _restart_counts(compose_stack) == restarts
    await load_through(compose_stack, no_outage, per_thread=6, outage_after=1)


async def no_outage() -> None:
    """The brokers' outage is over before the load starts: nothing more to break."""


def _restart_counts(stack) -> dict[str, str]:
    return {s: stack.container_tool("inspect", "-f", "{{.RestartCount}}", stack.container(s)).stdout.strip()
            for s in APP_SERVICES}


def _readyz(port: str) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3).status_code
    except httpx.HTTPError:
        return None
