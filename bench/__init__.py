"""Benchmarks of Helpdesk IM against the limits of its own Kafka and MongoDB (`make bench`)."""
