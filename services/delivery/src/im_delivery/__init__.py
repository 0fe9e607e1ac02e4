"""Helpdesk IM delivery: per-agent queues (worker) and the WebSocket stream (gateway)."""
