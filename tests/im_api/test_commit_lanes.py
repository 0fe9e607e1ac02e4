"""The group commit serves tenants in lanes of their own: a tenant's transaction in progress — as
long as it takes — does not hold another tenant's send, while one tenant's sends still commit one
batch at a time (never two transactions of one tenant racing each other)."""

from __future__ import annotations

import asyncio

import pytest
from im_api_helpers import running
from support.wait import eventually

pytestmark = pytest.mark.integration


async def test_a_send_of_tenant_b_commits_while_tenant_as_transaction_is_held(api_settings):
    async with running(api_settings) as api:
        for tenant in ("acme", "bravo"):
            await api.add_agents(tenant, "ann", "ben")
        acme = (await api.start("acme", "ann", "ben"))["id"]
        bravo = (await api.start("bravo", "ann", "ben"))["id"]

        committer = api.app.state.committer
        store = committer.store
        read_conversation = store.conversation
        inside, release = asyncio.Event(), asyncio.Event()
        acme_batches_at_once, acme_in_progress = [], 0

        async def conversation(tenant_id, conversation_id, **kw):
            # Inside the group commit's transaction: acme's is held here until released.
            nonlocal acme_in_progress
            if tenant_id == "acme":
                acme_in_progress += 1
                acme_batches_at_once.append(acme_in_progress)
                inside.set()
                try:
                    await release.wait()
                finally:
                    acme_in_progress -= 1
            return await read_conversation(tenant_id, conversation_id, **kw)

        store.conversation = conversation
        try:
            held = asyncio.create_task(api.send("acme", "ann", acme, "held in its transaction", "a1"))
            await asyncio.wait_for(inside.wait(), 30)
            more_acme = [asyncio.create_task(api.send("acme", "ann", acme, f"behind it {i}", f"a{i + 2}"))
                         for i in range(3)]
            # acme's transaction is still open: bravo's send must not wait for it.
            answer = await asyncio.wait_for(api.send("bravo", "ann", bravo, "not behind acme", "b1"), 30)
            assert answer.status_code == 201, answer.text
            assert not held.done() and not any(t.done() for t in more_acme)
        finally:
            release.set()
            store.conversation = read_conversation
        answers = [await held, *[await t for t in more_acme]]
        assert [a.status_code for a in answers] == [201] * 4
        # acme's later sends waited for its held batch: one acme transaction at a time, in order.
        assert max(acme_batches_at_once) == 1
        assert answers[0].json()["seq"] == 1 and sorted(a.json()["seq"] for a in answers) == [1, 2, 3, 4]


async def test_sends_queued_behind_a_batch_commit_without_any_later_send_to_wake_the_committer(api_settings):
    """Every lane busy (one here), sends queue up; when the batch ends they must commit on their
    own — not wait for some new send to arrive (a freed lane once went unnoticed until then)."""
    async with running(api_settings.model_copy(update={"commit_lanes": 1})) as api:
        await api.add_agents("acme", "ann", "ben")
        acme = (await api.start("acme", "ann", "ben"))["id"]
        store = api.app.state.committer.store
        read_conversation = store.conversation
        inside, release = asyncio.Event(), asyncio.Event()

        async def conversation(tenant_id, conversation_id, **kw):
            if not release.is_set():
                inside.set()
                await release.wait()
            return await read_conversation(tenant_id, conversation_id, **kw)

        store.conversation = conversation
        try:
            first = asyncio.create_task(api.send("acme", "ann", acme, "the batch in progress", "q1"))
            await asyncio.wait_for(inside.wait(), 30)
            queued = [asyncio.create_task(api.send("acme", "ann", acme, f"queued {i}", f"q{i + 2}")) for i in range(3)]
            await eventually(lambda: len(api.app.state.committer.pending) == 3, timeout=30,
                             message="the three sends queued behind the batch")
        finally:
            release.set()
            store.conversation = read_conversation
        answers = await asyncio.wait_for(asyncio.gather(first, *queued), 30)
        assert [a.status_code for a in answers] == [201] * 4
        assert sorted(a.json()["seq"] for a in answers) == [1, 2, 3, 4]
