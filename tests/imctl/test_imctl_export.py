"""`imctl export` against the real Kafka and MongoDB: threads posted through the real im-api app
(in this process), exported by the CLI as im-api exports them over HTTP, audited in imctl's
`operator_audit` and in im-api's `audit_log`, and refused to anyone but the tenant's admins."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from im_api.app import create_app
from im_api.settings import ApiSettings
from im_contracts.models import to_rfc3339
from imctl.tokens import mint

pytestmark = pytest.mark.integration
T, OTHER = "acme", "globex"
HOSTILE = "ok\x1b[2J\x1b]0;pwned\x07\rhidden\u202egnp.exe\x85end 👋"


def imctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imctl", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


class Api:
    """The im-api app in this process (its real lifespan), spoken to through ASGI."""

    def __init__(self, http: httpx.AsyncClient, secret: str) -> None:
        self.http, self.secret = http, secret

    def token(self, tenant: str, agent: str, role: str = "agent") -> str:
        return mint(self.secret, tenant, agent, role, 600)

    def auth(self, tenant: str, agent: str, role: str = "agent") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, agent, role)}"}

    async def thread(self, tenant: str, me: str, other: str, *bodies: str) -> tuple[str, list[dict]]:
        """A new thread of `me` and `other` (both added as agents) with `bodies` posted by `me`."""
        for agent in (me, other):
            r = await self.http.put(f"/v1/agents/{agent}", json={"display_name": agent.title()},
                                    headers=self.auth(tenant, "root", "admin"))
            assert r.status_code == 200, r.text
        r = await self.http.post("/v1/conversations", json={"participant_ids": [other]}, headers=self.auth(tenant, me))
        assert r.status_code in (200, 201), r.text
        cid = r.json()["id"]
        posted = []
        for i, body in enumerate(bodies, 1):
            r = await self.http.post(f"/v1/conversations/{cid}/messages",
                                     json={"body": body, "client_msg_id": f"{cid}-{i}"}, headers=self.auth(tenant, me))
            assert r.status_code == 201, r.text
            posted.append(r.json())
        return cid, posted

    async def history(self, tenant: str, agent: str, cid: str) -> list[dict]:
        r = await self.http.get(f"/v1/conversations/{cid}/messages", headers=self.auth(tenant, agent))
        assert r.status_code == 200, r.text
        return r.json()["items"]


@pytest.fixture
async def api(endpoints, kafka_topics: str, mongo_db_name: str, jwt_secret: str, mongo) -> AsyncIterator[Api]:
    settings = ApiSettings(
        kafka_bootstrap=endpoints.kafka_bootstrap, kafka_idempotence=endpoints.kafka_idempotence,
        topic_prefix=kafka_topics, mongo_uri=endpoints.mongo_uri, mongo_db=mongo_db_name, jwt_secret=jwt_secret,
        outbox_lease_ttl_s=1.5, outbox_lease_renew_s=0.3, outbox_poll_s=0.1, outbox_publish_timeout_s=4.0,
        retry_initial_s=0.05, retry_max_s=0.5, connect_timeout_s=20.0,
        send_rate_per_agent=0, send_rate_per_tenant=0, ticket_rate_per_agent=0, ticket_rate_per_tenant=0)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://im-api",
                                     timeout=30) as http:
            yield Api(http, jwt_secret)


@pytest.fixture
def env(jwt_secret: str, mongo_uri: str, mongo_db_name: str) -> dict[str, str]:
    return {"IM_JWT_SECRET": jwt_secret, "IM_MONGO_URI": mongo_uri, "IM_MONGO_DB": mongo_db_name,
            "IM_ADMIN_TOKEN": ""}


def lines_of(text: str) -> list[dict]:
    """JSON lines end in \n alone (str.splitlines would also split a body at \x85 or \u2028)."""
    return [json.loads(line) for line in text.split("\n") if line]


def without_type(line: dict) -> dict:
    return {k: v for k, v in line.items() if k != "type"}


async def test_export_of_a_thread_matches_its_history_and_is_recorded_in_both_audit_logs(api, env, mongo,
                                                                                        mongo_db_name):
    cid, _ = await api.thread(T, "alice", "bob", "the printer is on fire", "card 4111", "fixed it", HOSTILE)
    r = await api.http.delete(f"/v1/conversations/{cid}/messages/2", headers=api.auth(T, "alice"))
    assert r.status_code == 200, r.text
    r = await api.http.patch(f"/v1/conversations/{cid}/messages/3", json={"body": "fixed it, really"},
                             headers=api.auth(T, "alice"))
    assert r.status_code == 200, r.text
    await api.thread(T, "carol", "dave", "another thread, not exported")

    out = await asyncio.to_thread(imctl, "export", "--tenant", T, "--conversation", cid,
                                  env={**env, "IM_ADMIN_TOKEN": api.token(T, "root", "admin")})
    assert out.returncode == 0, out.stderr
    lines = lines_of(out.stdout)
    assert lines[0]["type"] == "conversation" and lines[0]["id"] == cid
    assert sorted(lines[0]["participants"]) == ["alice", "bob"]
    assert [line["type"] for line in lines[1:]] == ["message"] * 4
    assert [without_type(line) for line in lines[1:]] == await api.history(T, "bob", cid)
    assert lines[2]["body"] == "" and lines[2]["deleted_at"] and "card 4111" not in out.stdout  # a tombstone
    assert lines[3]["body"] == "fixed it, really" and lines[3]["edited_at"]
    assert lines[4]["body"] == HOSTILE and not any(ch in out.stdout for ch in "\x1b\x07\r\u202e\x85")
    assert "another thread" not in out.stdout
    assert "1 conversation, 4 messages exported" in out.stderr
    # What im-api's HTTP export streams (the same generators); only the body that could drive a
    # terminal is spelled with JSON escapes.
    r = await api.http.get(f"/v1/admin/conversations/{cid}/export", headers=api.auth(T, "root", "admin"))
    assert r.status_code == 200 and lines_of(r.text) == lines
    assert r.text.split("\n")[:4] == out.stdout.split("\n")[:4] and "\u202e" in r.text

    db = mongo[mongo_db_name]
    mine = await db["operator_audit"].find({"action": "export"}).to_list()
    assert len(mine) == 1 and f"record {mine[0]['_id']}" in out.stderr
    assert (mine[0]["tenant_id"], mine[0]["actor"], mine[0]["role"]) == (T, "root", "admin")
    assert mine[0]["details"] == {"conversation": cid, "out": "-"}
    # By time: ids made in two processes within one second need not sort in the order they were made.
    theirs = await db["audit_log"].find({"action": "export.conversation"}).sort("at", 1).to_list()
    assert len(theirs) == 2  # imctl's, then the HTTP export's
    assert (theirs[0]["tenant_id"], theirs[0]["actor"], theirs[0]["role"]) == (T, "root", "admin")
    assert theirs[0]["target"] == {"type": "conversation", "conversation_id": cid} == theirs[1]["target"]
    assert theirs[0]["details"]["via"] == "imctl" and theirs[0]["details"]["operator_audit_id"] == str(mine[0]["_id"])
    assert "via" not in theirs[1]["details"]

    # Both readers of the audit log show it: im-api's admin API and `imctl audit`.
    r = await api.http.get("/v1/admin/audit", params={"action": "export.conversation"},
                           headers=api.auth(T, "root", "admin"))
    items = r.json()["items"]
    assert sorted((i["actor"], i["details"].get("via") or "") for i in items) == [("root", ""), ("root", "imctl")]
    listed = await asyncio.to_thread(imctl, "audit", "--tenant", T, "--json",
                                     env={**env, "IM_ADMIN_TOKEN": api.token(T, "root", "admin")})
    assert listed.returncode == 0, listed.stderr
    records = lines_of(listed.stdout)
    exports = [(r["source"], r["action"]) for r in records if r["action"].startswith("export")]
    assert sorted(exports) == [("im-api", "export.conversation"), ("im-api", "export.conversation"),
                               ("imctl", "export")]
    via = [r for r in records if r["details"].get("via") == "imctl"]
    assert len(via) == 1 and via[0]["target"]["conversation_id"] == cid


async def test_export_by_range_writes_every_thread_with_messages_in_it_to_a_file(api, env, mongo, mongo_db_name,
                                                                                 tmp_path: Path):
    a, posted_a = await api.thread(T, "alice", "bob", "a1", "a2")
    b, posted_b = await api.thread(T, "carol", "dave", "b1", "b2")
    await api.thread(OTHER, "olga", "oleg", "globex secret")
    admin = {**env, "IM_ADMIN_TOKEN": api.token(T, "root", "admin")}
    history = {a: await api.history(T, "alice", a), b: await api.history(T, "carol", b)}

    def expected(start: datetime, end: datetime) -> list[dict]:
        """The threads in order of last activity (a, then b), each with its messages in [start, end)."""
        out = []
        for cid in (a, b):
            inside = [m for m in history[cid] if start <= datetime.fromisoformat(m["created_at"]) < end]
            if inside:
                out += [{"type": "conversation", "id": cid}] + [{"type": "message", **m} for m in inside]
        return out

    def comparable(lines: list[dict]) -> list[dict]:
        return [{"type": "conversation", "id": line["id"]} if line["type"] == "conversation" else line
                for line in lines]

    now = datetime.now(UTC)
    whole = (now - timedelta(hours=1), now + timedelta(hours=1))
    target = tmp_path / "acme.jsonl"
    out = await asyncio.to_thread(imctl, "export", "--tenant", T, "--from", to_rfc3339(whole[0]),
                                  "--to", whole[1].isoformat(), "--out", str(target), env=admin)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and f"to {target}" in out.stderr and "2 conversations, 4 messages" in out.stderr
    lines = lines_of(target.read_text())
    assert comparable(lines) == expected(*whole)
    assert [line.get("body") for line in lines] == [None, "a1", "a2", None, "b1", "b2"]
    assert "globex" not in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # message bodies: the operator's alone
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left beside it

    # From a1 (inclusive) to b1 (exclusive): b1 and what follows it are out.
    split = (datetime.fromisoformat(posted_a[0]["created_at"]), datetime.fromisoformat(posted_b[0]["created_at"]))
    out = await asyncio.to_thread(imctl, "export", "--tenant", T, "--from", posted_a[0]["created_at"],
                                  "--to", posted_b[0]["created_at"], env=admin)
    assert out.returncode == 0, out.stderr
    lines = lines_of(out.stdout)
    assert comparable(lines) == expected(*split)
    bodies = [line["body"] for line in lines if line["type"] == "message"]
    assert bodies[0] == "a1" and "b1" not in bodies and "b2" not in bodies
    # The same range over HTTP: the same bytes.
    r = await api.http.get("/v1/admin/export", params={"from": posted_a[0]["created_at"],
                                                       "to": posted_b[0]["created_at"]},
                           headers=api.auth(T, "root", "admin"))
    assert r.status_code == 200 and r.text == out.stdout

    # A range before anything was posted: an empty export, the file replaced by an empty one.
    out = await asyncio.to_thread(imctl, "export", "--tenant", T, "--from", "2020-01-01T00:00:00Z",
                                  "--to", "2020-01-02T00:00:00+02:00", "--out", str(target), env=admin)
    assert out.returncode == 0 and target.read_text() == "" and "0 conversations, 0 messages" in out.stderr

    db = mongo[mongo_db_name]
    mine = await db["operator_audit"].find({"action": "export"}).sort("at", 1).to_list()
    assert [m["details"] for m in mine] == [
        {"from": to_rfc3339(whole[0]), "to": to_rfc3339(whole[1]), "out": str(target)},
        {"from": to_rfc3339(split[0]), "to": to_rfc3339(split[1]), "out": "-"},
        {"from": "2020-01-01T00:00:00.000Z", "to": "2020-01-01T22:00:00.000Z", "out": str(target)}]
    theirs = await db["audit_log"].find({"action": "export.range", "details.via": "imctl"}).sort("at", 1).to_list()
    assert [(t["tenant_id"], t["actor"], t["role"]) for t in theirs] == [(T, "root", "admin")] * 3
    assert [t["target"] for t in theirs] == [{"type": "tenant", "from": m["details"]["from"], "to": m["details"]["to"]}
                                             for m in mine]

    # `--to` must come after `--from`; a time without a zone is refused: nothing exported or recorded.
    for start, end, said in ((whole[1].isoformat(), whole[0].isoformat(), "--to must be after --from"),
                             (whole[0].isoformat(), whole[0].isoformat(), "--to must be after --from"),
                             ("2026-11-27T00:00:00", whole[1].isoformat(), "needs a zone"),
                             ("yesterday", whole[1].isoformat(), "not an RFC 3339 time")):
        out = await asyncio.to_thread(imctl, "export", "--tenant", T, "--from", start, "--to", end, env=admin)
        assert out.returncode == 2 and said in out.stderr and not out.stdout, out.stderr
    for half in (["--from", whole[0].isoformat()], ["--conversation", a, "--to", whole[1].isoformat()], []):
        out = await asyncio.to_thread(imctl, "export", "--tenant", T, *half, env=admin)
        assert out.returncode == 2 and not out.stdout, out.stderr
    assert await db["operator_audit"].count_documents({"action": "export"}) == 3


async def test_export_is_refused_to_all_but_the_tenants_admins_and_an_unknown_thread_is_an_error(
        api, env, mongo, mongo_db_name, jwt_secret, tmp_path: Path):
    cid, _ = await api.thread(T, "alice", "bob", "acme only")
    target = tmp_path / "out.jsonl"
    thread = ["export", "--tenant", T, "--conversation", cid, "--out", str(target)]

    no_token = await asyncio.to_thread(imctl, *thread, env=env)
    assert no_token.returncode == 2 and "admin token" in no_token.stderr
    for wrong in (api.token(T, "alice", "agent"), api.token(OTHER, "root", "admin"),
                  mint("another-secret-of-32-characters!", T, "root", "admin", 600)):
        out = await asyncio.to_thread(imctl, *thread, env={**env, "IM_ADMIN_TOKEN": wrong})
        assert out.returncode == 3 and out.stderr.startswith("refused") and not out.stdout, out.stderr
        out = await asyncio.to_thread(imctl, "export", "--tenant", T, "--from", "2020-01-01T00:00:00Z",
                                      "--to", "2030-01-01T00:00:00Z", env={**env, "IM_ADMIN_TOKEN": wrong})
        assert out.returncode == 3 and out.stderr.startswith("refused") and not out.stdout, out.stderr
    # A token given on the command line is judged the same.
    out = await asyncio.to_thread(imctl, *thread, "--token", api.token(T, "bob", "agent"), env=env)
    assert out.returncode == 3 and "an admin token of tenant 'acme' is required" in out.stderr

    # Unknown in the tenant: not there at all, or another tenant's (asked by that tenant's admin).
    for tenant, conversation in ((T, "no-such-thread"), (OTHER, cid)):
        out = await asyncio.to_thread(imctl, "export", "--tenant", tenant, "--conversation", conversation,
                                      "--out", str(target), env={**env, "IM_ADMIN_TOKEN": api.token(tenant, "root",
                                                                                                     "admin")})
        assert out.returncode == 1 and not out.stdout, out.stderr
        assert f"no conversation {conversation!r} in tenant {tenant!r}: nothing exported" in out.stderr
    out = await asyncio.to_thread(imctl, "export", "--tenant", T, "--conversation", cid, "--out", str(tmp_path),
                                  env={**env, "IM_ADMIN_TOKEN": api.token(T, "root", "admin")})
    assert out.returncode == 2 and "existing folder" in out.stderr

    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file
    db = mongo[mongo_db_name]
    assert await db["operator_audit"].count_documents({}) == 0  # nothing shown, nothing recorded
    assert await db["audit_log"].count_documents({"action": {"$regex": "^export"}}) == 0


async def test_export_reads_a_long_thread_page_by_page_and_writes_each_line_as_it_is_read(
        api, jwt_secret, mongo_uri, mongo_db_name, monkeypatch):
    import im_api.lifecycle
    from imctl.ops import export

    cid, _ = await api.thread(T, "alice", "bob", *(f"m{i}" for i in range(1, 8)))
    monkeypatch.setattr(im_api.lifecycle, "EXPORT_PAGE", 3)  # 7 messages: pages of 3, 3 and 1
    monkeypatch.setenv("IM_JWT_SECRET", jwt_secret)
    reads: list[int] = []  # how many message pages had been read when each line was written

    class Sink:
        def __init__(self) -> None:
            self.lines: list[bytes] = []

        def write(self, line: bytes) -> None:
            self.lines.append(line)
            reads.append(pages[0])

    sink, pages = Sink(), [0]
    real = im_api.lifecycle.messages_after

    def counting(*args, **kwargs):
        pages[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(im_api.lifecycle, "messages_after", counting)
    done = await export(api.token(T, "root", "admin"), T, mongo_uri, mongo_db_name,
                        lambda: contextlib.nullcontext(sink), conversation=cid)
    assert (done.conversations, done.messages) == (1, 7)
    assert [without_type(json.loads(line)) for line in sink.lines[1:]] == await api.history(T, "bob", cid)
    # Each page's lines were written before the next page was read.
    assert reads == [0, 1, 1, 1, 2, 2, 2, 3]


def test_atomic_file_leaves_no_half_file_when_the_export_fails(tmp_path: Path):
    from imctl.ops import atomic_file

    target = tmp_path / "export.jsonl"
    target.write_text("the previous export\n")
    with pytest.raises(RuntimeError), atomic_file(target) as f:
        f.write(b'{"type": "conversation"}\n')
        raise RuntimeError("the database went away")
    assert target.read_text() == "the previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    with atomic_file(target) as f:
        f.write(b"whole\n")
    assert target.read_text() == "whole\n" and [p.name for p in tmp_path.iterdir()] == [target.name]
