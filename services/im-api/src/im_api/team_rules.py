"""The team-request rules, pure: who a request is offered to, when it escalates, who may claim or
release it, and what each step makes of the stored request. The I/O (`team_requests.py`) reads
the documents and presence, calls these and writes what they return."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from im_contracts.models import QUESTION_PREVIEW_CHARS

# Statuses that count as "at the console now" for an offer (presence's three states).
PRESENT = ("online", "away")


@dataclass(frozen=True)
class TeamSettings:
    """A tenant's team settings (admins: GET/PUT /v1/admin/team-settings)."""

    offer_offline_when_none_online: bool = True
    claim_timeout_s: int = 300


def offer_targets(members: Sequence[str], status: Mapping[str, str], exclude: set[str],
                  offline_when_none_online: bool) -> list[str]:
    """The members a new (or released) request is offered to: those online or away, in the
    teams' order; when none of them is online or away, every member if the tenant says so (else
    nobody until it escalates). `members`: the teams' active members, each once; `exclude`: the
    thread's participants (the asker above all), who need no offer."""
    candidates = [m for m in dict.fromkeys(members) if m not in exclude]
    present = [m for m in candidates if status.get(m, "offline") in PRESENT]
    if present:
        return present
    return candidates if offline_when_none_online else []


def escalation_targets(members: Sequence[str], offered: Sequence[str], exclude: set[str]) -> list[str]:
    """The members an escalation adds: everyone not offered yet, offline ones too."""
    already = set(offered) | exclude
    return [m for m in dict.fromkeys(members) if m not in already]


def claim_timeout(team_timeouts: Sequence[int | None], default_s: int) -> int:
    """A request of several teams escalates at the first of their timeouts (None: the tenant's)."""
    return min((t if t is not None else default_s) for t in team_timeouts) if team_timeouts else default_s


def question_of(body: str | None) -> str | None:
    if body is None:
        return None
    return body if len(body) <= QUESTION_PREVIEW_CHARS else body[:QUESTION_PREVIEW_CHARS - 1] + "…"


def new_request(teams: Sequence[Mapping[str, Any]], asked_by: str, question: str | None, offered_to: list[str],
                at: datetime, timeout_s: int) -> dict[str, Any]:
    """The stored request of a thread asked of `teams` ({id, name, claim_timeout_s})."""
    return {"teams": [{"id": t["id"], "name": t["name"]} for t in teams], "asked_by": asked_by,
            "question": question, "status": "open", "offered": list(offered_to), "claimed_by": None,
            "claimed_at": None, "opened_at": at, "escalated": False, "timeout_s": timeout_s}


ClaimOutcome = Literal["claim", "already_yours", "taken", "not_offered"]


def claim_outcome(request: Mapping[str, Any] | None, offered_to: Sequence[str], agent: str) -> ClaimOutcome:
    """What a claim by `agent` does. An open request is claimed by one of those it is open to now
    (`offered_to`: not the member who just handed it back, nor one a re-offer left out); a taken one
    is refused to anyone it was ever offered to, naming the winner (the caller), and the winner's own
    second press changes nothing."""
    if request is None:
        return "not_offered"
    if request["status"] == "claimed" and agent in request.get("offered", []):
        return "already_yours" if request["claimed_by"] == agent else "taken"
    if request["status"] == "open" and agent in offered_to:
        return "claim"
    return "not_offered"


def claimed(request: Mapping[str, Any], agent: str, at: datetime) -> dict[str, Any]:
    return {**request, "status": "claimed", "claimed_by": agent, "claimed_at": at}


ReleaseOutcome = Literal["release", "not_claimed", "not_allowed", "not_visible"]


def release_outcome(request: Mapping[str, Any] | None, agent: str, asked_by: str, participants: Sequence[str]
                    ) -> ReleaseOutcome:
    """The asker (or the member who took it, handing it back) releases a taken request."""
    if request is None or (agent not in participants and agent not in request.get("offered", [])):
        return "not_visible"
    if agent not in (asked_by, request.get("claimed_by")):
        return "not_allowed"
    if request["status"] != "claimed":
        return "not_claimed"
    return "release"


def released(request: Mapping[str, Any], offered_to: list[str], at: datetime) -> dict[str, Any]:
    """Open again, from `at`: offered anew, its escalation clock restarted."""
    return {**request, "status": "open", "claimed_by": None, "claimed_at": None, "opened_at": at,
            "escalated": False, "offered": list(dict.fromkeys([*request.get("offered", []), *offered_to]))}


def escalate_at(request: Mapping[str, Any]) -> datetime | None:
    """When an open, not yet escalated request escalates (None: never again)."""
    if request["status"] != "open" or request.get("escalated"):
        return None
    return request["opened_at"] + timedelta(seconds=request["timeout_s"])


def escalated(request: Mapping[str, Any], added: list[str]) -> dict[str, Any]:
    return {**request, "escalated": True, "offered": list(dict.fromkeys([*request.get("offered", []), *added]))}


def request_view(conversation: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any] | None:
    """The contract's TeamRequest of a stored thread (None: not a team request)."""
    request = conversation.get("team_request")
    if not request:
        return None
    by = request.get("claimed_by")
    return {
        "conversation_id": conversation["_id"],
        "teams": request["teams"],
        "asked_by": {"id": request["asked_by"], "display_name": names.get(request["asked_by"], request["asked_by"])},
        "related": conversation.get("related"),
        "question": request.get("question"),
        "status": request["status"],
        "offered_to": list(conversation.get("offered_to") or []),
        "claimed_by": {"id": by, "display_name": names.get(by, by)} if by else None,
        "claimed_at": request.get("claimed_at"),
        "opened_at": request["opened_at"],
        "escalate_at": escalate_at(request),
        "escalated": bool(request.get("escalated")),
    }


def names_needed(conversation: Mapping[str, Any]) -> set[str]:
    request = conversation.get("team_request") or {}
    return {a for a in (request.get("asked_by"), request.get("claimed_by")) if a}


def team_names(request: Mapping[str, Any]) -> str:
    names = [t["name"] for t in request["teams"]]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
