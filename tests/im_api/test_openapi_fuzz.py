"""schemathesis against the served OpenAPI: no 5xx and every response conforms to its schema and its
documented content type."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from support.wait import eventually

pytestmark = pytest.mark.integration
T = "acme"
EXAMPLES_PER_OPERATION = 10  # bounded: the whole run stays within a few seconds


def generated_cases(operation) -> list:
    cases: list = []

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy())
    def collect(case) -> None:
        cases.append(case)

    collect()
    return cases


async def test_no_request_the_schema_allows_makes_a_5xx_or_a_nonconforming_answer(api):
    async def ready() -> bool:
        return (await api.http.get("/readyz")).status_code == 200

    await eventually(ready, timeout=20, message="im-api ready")  # /readyz answers 503 until then, by design
    await api.add_agents(T, "alice", "bob")
    c = await api.start(T, "alice", "bob")
    await api.send(T, "alice", c["id"], "hello", "m1")
    spec = (await api.http.get("/openapi.json")).json()
    assert (await api.http.get("/docs")).status_code == 200
    schema = schemathesis.openapi.from_dict(spec)
    auth = api.auth(T, "alice")
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for case in generated_cases(operation):
            kwargs = case.as_transport_kwargs(base_url="http://im-api")
            headers = {**(kwargs.get("headers") or {}), **auth}
            r = await api.http.request(kwargs["method"], kwargs["url"], headers=headers,
                                       params=kwargs.get("params"), json=kwargs.get("json"),
                                       content=kwargs.get("content") or kwargs.get("data"))
            calls += 1
            if r.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {r.status_code} {r.text[:200]}")
                continue
            assert r.headers.get("x-request-id")
            try:
                # The content type too: /metrics was documented as JSON while serving Prometheus text.
                case.validate_response(r, checks=[response_schema_conformance, content_type_conformance])
            except Exception as exc:  # noqa: BLE001 - collected per operation, reported together
                failures.append(f"{case.method} {case.formatted_path} -> {r.status_code}: {str(exc)[:400]}")
    assert calls > 50
    assert not failures, "\n".join(failures[:15])
