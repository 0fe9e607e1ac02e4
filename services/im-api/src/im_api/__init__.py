"""Helpdesk IM HTTP API: agents, conversations, messages, read markers, and the outbox relay."""
