"""Every im-api hears the directory's changes (`im.agents.v1`, from the end): an agent that changed
is forgotten by the auth check's cache (ActiveAgents), so a deactivation made through another
process takes effect here as soon as its AgentChanged arrives, well inside the cache's bound."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from im_contracts.events import AgentChanged, Event
from im_contracts.topics import AGENTS
from im_runtime.reader import TopicReader

from ..active_agents import ActiveAgents
from ..settings import ApiSettings


def agent_change_reader(settings: ApiSettings, active: ActiveAgents) -> TopicReader:
    def on_event(event: Event | None, record: ConsumerRecord) -> None:
        if isinstance(event, AgentChanged):
            active.changed(event.tenant_id, event.agent_id)

    # From the end: what came before is in the directory, read on demand. A restarted reader may
    # have missed changes meanwhile: it forgets everything, so nothing older than it is trusted.
    reader = TopicReader(settings, AGENTS, on_event, start_at="end", on_restart=active.forget_all)
    return reader
