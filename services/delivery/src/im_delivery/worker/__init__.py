"""The fan-out worker: domain events to per-agent queue entries, the queue writer, pruning."""
