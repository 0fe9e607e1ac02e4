"""Every hot query is served by an index: explain() shows an IXSCAN and no COLLSCAN."""

from __future__ import annotations

import json

import pytest
from im_api.store import Store, now

pytestmark = pytest.mark.integration
T = "acme"


def stages(plan: dict) -> list[str]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "stage" in node:
                found.append(node["stage"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(plan.get("queryPlanner", {}).get("winningPlan", {}))
    return found


async def test_thread_list_history_and_related_lookup_use_indexes(api, mongo, mongo_db_name):
    await api.add_agents(T, "alice", "bob", "carol")
    c = await api.start(T, "alice", "bob", related={"type": "ticket", "id": "T-1"})
    await api.start(T, "alice", "carol")
    for i in range(5):
        await api.send(T, "alice", c["id"], f"m{i}", f"m{i}")
    store = Store(mongo[mongo_db_name], outbox_retention_s=60)
    page = (await api.http.get("/v1/conversations?limit=1", headers=api.auth(T, "alice"))).json()
    first = page["items"][0]
    from datetime import datetime

    from im_api.store import list_key
    after = list_key(datetime.fromisoformat(first["last_message_at"].replace("Z", "+00:00")), first["id"])
    plans = {
        "thread list": store.thread_cursor(T, "alice", now(), None, 50),
        "thread list, next page": store.thread_cursor(T, "alice", now(), after, 50),
        "history": store.history_cursor(T, c["id"], 4, None, 50),
        "history after": store.history_cursor(T, c["id"], None, 2, 50),
        "history between": store.history_cursor(T, c["id"], 4, 1, 50),
        "related (agent)": store.related_cursor(T, "ticket", "T-1", "alice", 50),
        "related (admin)": store.related_cursor(T, "ticket", "T-1", None, 50),
    }
    for name, cursor in plans.items():
        explained = await cursor.explain()
        found = stages(explained)
        assert "IXSCAN" in found, f"{name}: {json.dumps(explained.get('queryPlanner'), default=str)[:800]}"
        assert "COLLSCAN" not in found, name
