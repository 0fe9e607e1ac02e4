"""The sweeper's every-second reads stay on their indexes and examine what is due only. A `$in`
over the partitions made SecantusDB fetch and filter every agent of them — with 10,000 agents that
alone kept the database busy at ~1 core while nothing happened; one read per partition instead
cost a command per partition every second (issue 19)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from im_presence.store import PresenceStore

from support.plans import stages

pytestmark = pytest.mark.integration


async def test_due_deadlines_and_unpublished_changes_are_one_indexed_read_each(mongo, mongo_db_name):
    store = PresenceStore(mongo[mongo_db_name])
    await store.ensure_indexes()
    now = datetime.now(UTC)
    agents = mongo[mongo_db_name]["presence_agents"]
    await agents.insert_many([
        {"_id": f"a{i}", "tenant_id": "acme", "agent_id": f"a{i}", "partition": i % 3,
         "grace_deadline": (now - timedelta(seconds=1)) if i % 4 == 0 else (now + timedelta(hours=1)) if i % 4 == 1
         else None, "dirty": i % 5 == 0}
        for i in range(60)])
    due = await store.due([0, 1, 2], now)
    assert sorted(a for _, a, _, _ in due) == sorted(f"a{i}" for i in range(60) if i % 4 == 0)
    assert all(deadline <= now for _, _, _, deadline in due)
    assert [p for _, _, p, _ in due] == sorted(p for _, _, p, _ in due)  # in partition order
    owned_elsewhere = await store.due([0, 2], now)  # another process owns partition 1
    assert sorted(a for _, a, _, _ in owned_elsewhere) == sorted(f"a{i}" for i in range(60) if i % 4 == 0 and i % 3 != 1)
    assert sorted(a for _, a in await store.unpublished([1])) == sorted(f"a{i}" for i in range(60) if i % 5 == 0 and i % 3 == 1)
    for name, query, matching in (("due", store.due_query(now), 15), ("unpublished", store.unpublished_query([0, 1, 2]), 12)):
        explained = await agents.find(query).explain()
        found = stages(explained)
        assert "IXSCAN" in found, f"{name}: {json.dumps(explained.get('queryPlanner'), default=str)[:800]}"
        assert "COLLSCAN" not in found, name
        # Only what is due is examined, not the 60 agents.
        assert explained["executionStats"]["totalDocsExamined"] == matching, name
