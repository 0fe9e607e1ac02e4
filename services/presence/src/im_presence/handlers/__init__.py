"""The entry points of presence: connection events, gateway heartbeats and the deadline sweeper."""
