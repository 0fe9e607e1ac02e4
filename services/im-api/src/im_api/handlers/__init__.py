"""Entry points of im-api that are not HTTP: Kafka consumers."""
