"""The sweeper's every-second reads stay on their indexes: one bounded range per
partition. A `$in` over the partitions made SecantusDB fetch and filter every agent of them —
with 10,000 agents that alone kept the database busy at ~1 core while nothing happened."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from im_presence.store import PresenceStore

from support.plans import stages

pytestmark = pytest.mark.integration


async def test_due_deadlines_and_unpublished_changes_are_read_per_partition_on_their_indexes(mongo, mongo_db_name):
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
    assert sorted(a for _, a in await store.unpublished([1])) == sorted(f"a{i}" for i in range(60) if i % 5 == 0 and i % 3 == 1)
    for name, query in (("due", store.due_query(1, now)), ("unpublished", store.unpublished_query(1))):
        explained = await agents.find(query).explain()
        found = stages(explained)
        assert "IXSCAN" in found, f"{name}: {json.dumps(explained.get('queryPlanner'), default=str)[:800]}"
        assert "COLLSCAN" not in found, name
