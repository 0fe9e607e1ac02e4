"""Reading `explain()` output: the stages of a query's winning plan (IXSCAN, FETCH, COLLSCAN, ...)."""

from __future__ import annotations


def stages(plan: dict) -> list[str]:
    found: list[str] = []

    def walk(node) -> None:
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
