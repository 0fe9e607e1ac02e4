"""Team requests end to end through the real processes (two im-api processes, delivery, presence,
Kafka, MongoDB): two members online and one offline; the online ones get the offer live; both
claim at once, each through its own im-api process — one 200, one 409 naming the winner; the
loser's list stops showing it; the offline member who connects later replays it as taken, never
as an open offer; an unclaimed request escalates after its timeout; an assistance request over
Kafka naming a team is offered the same way; the metrics count it all."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid

import httpx
import pytest
import websockets
from imctl import servers as local
from imctl.tokens import mint
from support.notify import metric
from support.wait import eventually

from support.stack import Stack, frames, start_stack

pytestmark = pytest.mark.e2e
T = "acme"
KCAT = shutil.which("kcat") or "/usr/bin/kcat"


class Socket:
    """One agent's stream, every frame kept in arrival order."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.frames: list[dict] = []

    @classmethod
    async def open(cls, stack: Stack, agent: str, replay: bool = False) -> "Socket":
        url = await stack.ticket_url(stack.token(T, agent), f"{agent}-desk")
        return cls(await websockets.connect(url + ("&cursor=0" if replay else ""), subprotocols=["im.v1"]))

    async def until(self, predicate, timeout: float = 30) -> dict:
        """The first frame (seen before or arriving within `timeout`) that `predicate` accepts."""
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                seen = len(self.frames)
                self.frames.extend(frames(await self.ws.recv()))

    async def close(self) -> None:
        await self.ws.close()


def team_frame(kind: str, conversation_id: str):
    return lambda f: f["type"] == f"team_request.{kind}" and f["request"]["conversation_id"] == conversation_id


@pytest.fixture
async def stack2(services, service_env, kafka_topics, jwt_secret):
    """The stack with a second im-api process beside the first, escalations looked for often."""
    env = {**service_env, "IM_API_TEAM_ESCALATION_INTERVAL_S": "0.3",
           # A closed socket makes its agent offline soon (the replaying members go away again).
           "IM_PRESENCE_OFFLINE_GRACE_S": "0.5", "IM_PRESENCE_SWEEP_INTERVAL_S": "0.2"}
    stack = await start_stack(services, env, jwt_secret)
    port = local.free_port()
    second = services.start("api2", ["-m", "im_api"], {**stack.env, "IM_API_PORT": str(port)},
                            f"http://127.0.0.1:{port}/readyz")
    await second.wait_ready(90)
    return stack, f"http://127.0.0.1:{port}"


async def test_a_team_is_offered_live_one_of_two_simultaneous_claims_wins_and_the_rest_follows(stack2):
    stack, api2 = stack2
    admin = stack.client(stack.token(T, "root", "admin"))
    async with admin:
        for agent in ("alice", "bob", "carol", "dave", "erin"):
            r = await admin.put(f"/v1/agents/{agent}", json={"display_name": agent.title()})
            assert r.status_code == 200, r.text
        r = await admin.post("/v1/teams", json={"name": "Tier 2", "member_ids": ["bob", "carol", "dave"],
                                                 "claim_timeout_s": 600})
        assert r.status_code == 201, r.text
        tier2 = r.json()["id"]
        r = await admin.post("/v1/teams", json={"name": "Night", "member_ids": ["bob", "erin"],
                                                 "claim_timeout_s": 1})
        night = r.json()["id"]

    bob, carol = await Socket.open(stack, "bob"), await Socket.open(stack, "carol")
    alice = stack.client(stack.token(T, "alice"))
    try:
        async def two_online():
            r = await alice.get("/v1/teams")
            return next(t for t in r.json()["items"] if t["id"] == tier2)["online_count"] == 2

        await eventually(two_online, timeout=30, message="bob and carol never shown online")

        r = await alice.post("/v1/conversations", json={
            "team_ids": [tier2], "related": {"type": "ticket", "id": "T-9", "title": "Refund"},
            "first_message": {"body": "Is this refundable?", "client_msg_id": "ask-1"}})
        assert r.status_code == 201, r.text
        conv = r.json()
        assert conv["team_request"]["offered_to"] == ["bob", "carol"]

        # Both online members get the offer live, with the related item and the question.
        for socket in (bob, carol):
            offer = await socket.until(team_frame("offered", conv["id"]))
            assert offer["request"]["status"] == "open" and isinstance(offer["cursor"], int)
            assert offer["request"]["related"]["id"] == "T-9" and offer["request"]["question"] == "Is this refundable?"

        # Both claim at once, each through another im-api process.
        async def claim(base: str, agent: str):
            async with httpx_client(base, stack.token(T, agent)) as c:
                return await c.post(f"/v1/conversations/{conv['id']}/claim")

        answers = await asyncio.gather(claim(stack.api_url, "bob"), claim(api2, "carol"))
        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
        won = next(r for r in answers if r.status_code == 200).json()
        lost = next(r for r in answers if r.status_code == 409).json()["error"]
        winner = won["team_request"]["claimed_by"]
        loser = "carol" if winner["id"] == "bob" else "bob"
        assert lost["code"] == "already_claimed" and lost["details"]["claimed_by"] == winner

        # Both sockets learn who took it; the loser's list no longer offers it.
        for socket in (bob, carol):
            taken = await socket.until(team_frame("claimed", conv["id"]))
            assert taken["request"]["claimed_by"] == winner and taken["request"]["offered_to"] == []
        async with httpx_client(stack.api_url, stack.token(T, loser)) as c:
            assert conv["id"] not in {t["id"] for t in (await c.get("/v1/conversations")).json()["items"]}
        async with httpx_client(stack.api_url, stack.token(T, winner["id"])) as c:
            history = (await c.get(f"/v1/conversations/{conv['id']}/messages")).json()["items"]
        assert [m["body"] for m in history][0] == "Is this refundable?"
        assert history[-1]["kind"] == "system" and "took the request for Tier 2" in history[-1]["body"]

        # Dave was offline: connecting later, his replay shows it taken, never open to him.
        dave = await Socket.open(stack, "dave", replay=True)
        try:
            taken = await dave.until(team_frame("claimed", conv["id"]))
            assert taken["request"]["claimed_by"] == winner
            assert not [f for f in dave.frames if team_frame("offered", conv["id"])(f)]
        finally:
            await dave.close()
        async with httpx_client(stack.api_url, stack.token(T, "dave")) as c:
            assert conv["id"] not in {t["id"] for t in (await c.get("/v1/conversations")).json()["items"]}

        # Night: bob is online, erin is not; nobody claims within its second, so it escalates.
        r = await alice.post("/v1/conversations", json={"team_ids": [night], "first_message": {
            "body": "Anyone awake?", "client_msg_id": "ask-2"}})
        assert r.status_code == 201, r.text
        late = r.json()
        assert late["team_request"]["offered_to"] == ["bob"]

        async def escalated():
            r = await alice.get(f"/v1/conversations/{late['id']}")
            return r.json()["team_request"] if r.json()["team_request"]["escalated"] else None

        request = await eventually(escalated, timeout=30, message="the request never escalated")
        assert request["offered_to"] == ["bob", "erin"] and request["status"] == "open"
        erin = await Socket.open(stack, "erin", replay=True)
        try:
            offer = await erin.until(team_frame("offered", late["id"]))
            assert offer["request"]["escalated"] is True and "erin" in offer["request"]["offered_to"]
        finally:
            await erin.close()

        # An assistance request over Kafka (kcat, a client none of ours) naming the team, once
        # dave, who only came to replay, is offline again.
        async def dave_gone():
            members = (await alice.get(f"/v1/teams/{tier2}")).json()["members"]
            return next(m for m in members if m["id"] == "dave")["status"] == "offline"

        await eventually(dave_gone, timeout=30, message="dave never went offline")
        request = {"tenant_id": T, "schema_version": 1, "event_id": uuid.uuid4().hex,
                   "occurred_at": "2026-11-27T10:00:00.000Z", "request_id": "ticketing-77",
                   "requested_by": "alice", "team_ids": [tier2],
                   "related": {"type": "ticket", "id": "77", "title": "Chargeback"}, "message": "Chargeback?"}
        service = mint(stack.secret, T, "ticketing", role="service", ttl_s=600, audience="im-kafka")
        out = await asyncio.to_thread(kcat_produce, stack, "acme:ticket:77", json.dumps(request), f"Bearer {service}")
        assert out.returncode == 0, out.stderr
        offer = await bob.until(lambda f: f["type"] == "team_request.offered"
                                and (f["request"]["related"] or {}).get("id") == "77", timeout=60)
        assert offer["request"]["asked_by"]["id"] == "alice" and offer["request"]["question"] == "Chargeback?"
        assert sorted(offer["request"]["offered_to"]) == ["bob", "carol"]
        await carol.until(team_frame("offered", offer["request"]["conversation_id"]))
    finally:
        await alice.aclose()
        await bob.close()
        await carol.close()

    # The metrics, over both im-api processes.
    async def total(name: str) -> float:
        return sum([await metric(stack.api_url, name), await metric(api2, name)])

    # Two over HTTP and one from Kafka (counted once its transaction is back, so waited for).
    await eventually(lambda: _equals(total("im_api_team_requests_offered_total"), 3), timeout=10)
    assert await total("im_api_team_requests_claimed_total") == 1
    assert await total("im_api_team_request_claim_seconds_count") == 1
    assert await total("im_api_team_requests_escalated_total") == 1


async def _equals(value, expected: float) -> bool:
    return (await value) == expected


def httpx_client(base: str, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=15)


def kcat_produce(stack: Stack, key: str, line: str, authorization: str) -> subprocess.CompletedProcess:
    topic = f"{stack.env['IM_TOPIC_PREFIX']}helpdesk.assistance-requests.v1"
    argv = [KCAT, "-P", "-b", stack.env["IM_KAFKA_BOOTSTRAP"], "-t", topic, "-k", key,
            "-H", f"authorization={authorization}"]
    return subprocess.run(argv, input=line + "\n", capture_output=True, text=True, timeout=60)
