"""Per-tenant lanes (pure): round robin between tenants, one batch per tenant at a time, each
tenant's items in their order, nothing lost or served twice."""

import random

import pytest
from im_runtime.lanes import TenantLanes

pytestmark = pytest.mark.unit


def test_a_tenant_with_one_item_waits_at_most_one_turn_behind_a_huge_backlog():
    lanes: TenantLanes[str, int] = TenantLanes()
    for i in range(1000):
        lanes.put("a", i)
    lanes.put("b", 0)
    first = lanes.take(10)
    assert first == ("a", list(range(10)))
    assert lanes.take(10) == ("b", [0]), "B is served beside A's batch in progress, not after its backlog"
    assert lanes.take(10) is None, "A is busy until its batch is done, B has nothing left"
    lanes.done("a")
    assert lanes.take(10) == ("a", list(range(10, 20)))


def test_turns_rotate_so_every_tenant_gets_a_batch_before_anyone_gets_a_second():
    lanes: TenantLanes[str, str] = TenantLanes()
    for tenant in ("a", "b", "c"):
        for i in range(3):
            lanes.put(tenant, f"{tenant}{i}")
    served = []
    for _ in range(9):
        tenant, batch = lanes.take(1)
        served.append(batch[0])
        lanes.done(tenant)
    assert served == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]
    assert len(lanes) == 0 and lanes.take(1) is None


def test_work_queued_during_a_batch_waits_for_done_and_then_for_its_turn():
    lanes: TenantLanes[str, int] = TenantLanes()
    lanes.put("a", 1)
    assert lanes.take(5) == ("a", [1])
    lanes.put("a", 2)
    lanes.put("b", 1)
    assert lanes.take(5) == ("b", [1])
    assert lanes.take(5) is None
    assert lanes.busy == {"a", "b"}
    lanes.done("b")
    lanes.done("a")
    assert lanes.take(5) == ("a", [2])


def test_random_interleavings_lose_nothing_repeat_nothing_and_keep_each_tenants_order():
    rng = random.Random(17)
    lanes: TenantLanes[int, int] = TenantLanes()
    sent: dict[int, int] = {}
    got: dict[int, list[int]] = {}
    in_progress: list[int] = []
    for _ in range(5000):
        roll = rng.random()
        if roll < 0.5:
            tenant = rng.randrange(5)
            sent[tenant] = sent.get(tenant, 0) + 1
            lanes.put(tenant, sent[tenant])
        elif roll < 0.8:
            taken = lanes.take(rng.randrange(1, 4))
            if taken is not None:
                tenant, batch = taken
                assert tenant not in in_progress, "never two batches of one tenant at once"
                in_progress.append(tenant)
                got.setdefault(tenant, []).extend(batch)
        elif in_progress:
            lanes.done(in_progress.pop(rng.randrange(len(in_progress))))
    while in_progress or len(lanes):
        for tenant in in_progress:
            lanes.done(tenant)
        in_progress.clear()
        while (taken := lanes.take(3)) is not None:
            got.setdefault(taken[0], []).extend(taken[1])
            in_progress.append(taken[0])
    assert {t: items for t, items in got.items()} == {t: list(range(1, n + 1)) for t, n in sent.items()}
