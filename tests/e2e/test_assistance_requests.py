"""Assistance requests end to end with clients no service of ours wrote: kcat produces the JSON line
(with the service token header) into the real stack; `imctl assist` and `imctl dead-letters` too."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from im_contracts.events import SYSTEM_TENANT
from imctl.tokens import mint
from support.wait import eventually

from support.stack import Stack

pytestmark = pytest.mark.e2e
KCAT = shutil.which("kcat") or "/usr/bin/kcat"


def kcat_produce(stack: Stack, key: str, line: str, authorization: str | None) -> subprocess.CompletedProcess:
    topic = f"{stack.env['IM_TOPIC_PREFIX']}helpdesk.assistance-requests.v1"
    argv = [KCAT, "-P", "-b", stack.env["IM_KAFKA_BOOTSTRAP"], "-t", topic, "-k", key]
    if authorization:
        argv += ["-H", f"authorization={authorization}"]
    return subprocess.run(argv, input=line + "\n", capture_output=True, text=True, timeout=60)


def imctl(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "IM_JWT_SECRET": stack.secret, "IM_KAFKA_BOOTSTRAP": stack.env["IM_KAFKA_BOOTSTRAP"],
           "IM_TOPIC_PREFIX": stack.env["IM_TOPIC_PREFIX"], "IM_KAFKA_IDEMPOTENCE": stack.env["IM_KAFKA_IDEMPOTENCE"]}
    return subprocess.run([sys.executable, "-m", "imctl", *args], capture_output=True, text=True, env=env,
                          timeout=120)


async def test_kcat_and_imctl_requests_open_one_related_thread_and_bad_ones_are_listed_as_dead_letters(stack):
    assert os.path.exists(KCAT), "kcat is installed on the build machines (/usr/bin/kcat)"
    tenant = "acme"
    async with stack.client(stack.token(tenant, "root", "admin")) as c:
        for agent in ("alice", "bob", "carol"):
            r = await c.put(f"/v1/agents/{agent}", json={"display_name": agent.title()})
            assert r.status_code == 200, r.text

    async def thread_with(count: int):
        async with stack.client(stack.token(tenant, "bob")) as c:
            items = (await c.get("/v1/related/ticket/42/conversations")).json()["items"]
            if len(items) == 1 and items[0]["last_seq"] == count:
                return items[0], (await c.get(f"/v1/conversations/{items[0]['id']}/messages")).json()["items"]
        return None

    request = {"tenant_id": tenant, "schema_version": 1, "event_id": uuid.uuid4().hex,
               "occurred_at": "2026-11-25T22:00:00.000Z", "request_id": "ticketing-42-1",
               "requested_by": "alice", "agent_ids": ["bob", "carol"],
               "related": {"type": "ticket", "id": "42", "title": "Refund"}, "message": "Is this refundable?"}
    service = mint(stack.secret, tenant, "ticketing", role="service", ttl_s=600, audience="im-kafka")
    out = await asyncio.to_thread(kcat_produce, stack, "acme:ticket:42", json.dumps(request), f"Bearer {service}")
    assert out.returncode == 0, out.stderr
    # A record without the header: dead-lettered as unauthorized, and the consumer moves on.
    out = await asyncio.to_thread(kcat_produce, stack, "acme:ticket:42", json.dumps(request), None)
    assert out.returncode == 0, out.stderr
    # kcat (librdkafka) and imctl (aiokafka) hash keys differently: wait, so the order is known.
    await eventually(lambda: thread_with(1), timeout=60, interval=0.2, message="the kcat request never arrived")
    out = await asyncio.to_thread(imctl, stack, "assist", "--tenant", tenant, "--from", "alice", "--to", "bob,carol",
                                  "--ticket", "42", "--title", "Refund", "Any news on this one?")
    assert out.returncode == 0, out.stderr

    thread, messages = await eventually(lambda: thread_with(2), timeout=60, interval=0.2,
                                        message="the requests never reached the thread")
    assert sorted(p["id"] for p in thread["participants"]) == ["alice", "bob", "carol"]
    assert [(m["sender_id"], m["body"]) for m in messages] == [
        ("alice", "Is this refundable?"), ("alice", "Any news on this one?")]

    listed = await asyncio.to_thread(imctl, stack, "dead-letters", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.strip().splitlines()]
    # Filed under the system tenant: the record carried no token, so the tenant it names is only a
    # claim (a tenant's own admins would otherwise see whatever anyone writes on the topic).
    assert [(d["reason"], d["tenant_id"], d["consumer"]) for d in letters] == [
        ("unauthorized", SYSTEM_TENANT, "im-api-assistance")]
    assert service not in listed.stdout and "Is this refundable" not in letters[0]["detail"]
    text = await asyncio.to_thread(imctl, stack, "dead-letters")
    assert "unauthorized" in text.stdout and "1 dead letters" in text.stderr
