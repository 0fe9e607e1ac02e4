"""A compose stack that fails after it started leaves nothing behind: the session's stack is
removed the same way (ComposeStack.running), so this proves its clean-up on failure."""

from __future__ import annotations

import uuid

import pytest
from compose_clients import stack_env
from imctl import servers as local
from imctl.compose import ComposeStack

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]


def test_a_stack_that_fails_midway_leaves_no_container_pod_network_or_volume_behind():
    stack = ComposeStack(project=f"imtestfail{uuid.uuid4().hex[:6]}",
                         say=lambda line: print(f"[compose] {line}", flush=True))
    stack.env = stack_env({"IM_STREAM_PORT": local.free_port(), "MONGO_PORT": local.free_port()}, stack.engine)
    with pytest.raises(RuntimeError, match="a test failing with the stack up"):
        with stack.running(services=("mongo",)):
            assert stack.containers("mongo") and stack.resources(["volume", "ls", "--format", "{{.Name}}"])
            raise RuntimeError("a test failing with the stack up")
    assert stack.leftovers() == []
