"""im-api's Prometheus metrics, in one place so the dashboard and the README name the same series."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Buckets from 1 ms: a send is a few ms on a quiet box; 2.5 s+ means a dependency is struggling.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUEST_SECONDS = Histogram("im_api_request_duration_seconds", "HTTP request latency by route template",
                            ["method", "route", "status"], buckets=_LATENCY)
MESSAGES_ACCEPTED = Counter("im_api_messages_accepted_total", "Messages stored (new, not idempotent replays)")
COMMIT_SECONDS = Histogram("im_api_commit_duration_seconds", "One group-commit transaction, retries included",
                           buckets=_LATENCY)
COMMIT_BATCH = Histogram("im_api_commit_batch_size", "Sends committed together in one transaction",
                         buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
OUTBOX_PUBLISHED = Counter("im_api_outbox_published_total", "Outbox records published to Kafka", ["topic"])
OUTBOX_BACKLOG = Gauge("im_api_outbox_backlog", "Unsent outbox records in the shards this process holds")
OUTBOX_OLDEST_AGE = Gauge("im_api_outbox_oldest_age_seconds",
                          "Age of the oldest unsent outbox record in the shards this process holds")
OUTBOX_SHARDS_HELD = Gauge("im_api_outbox_shards_held", "Outbox shards this process's relay holds a lease on")
DEAD_LETTERED = Counter("im_api_dead_letters_total", "Records dead-lettered", ["topic", "reason"])
RATE_LIMITED = Counter("im_api_rate_limited_total", "Requests refused by a rate limit (429)", ["what"])
TEAM_REQUESTS_OFFERED = Counter("im_api_team_requests_offered_total", "Threads asked of teams (new team requests)")
TEAM_REQUESTS_CLAIMED = Counter("im_api_team_requests_claimed_total", "Team requests taken by a member")
TEAM_REQUESTS_RELEASED = Counter("im_api_team_requests_released_total", "Team requests released back to their teams")
TEAM_REQUESTS_ESCALATED = Counter("im_api_team_requests_escalated_total",
                                  "Team requests nobody took in time, offered to every member")
# From asked (or released) to taken: seconds to hours.
TEAM_CLAIM_SECONDS = Histogram("im_api_team_request_claim_seconds", "Time from a team request's offer to its claim",
                               buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200))
RETENTION_MESSAGES_DELETED = Counter("im_api_retention_messages_deleted_total",
                                     "Messages deleted for being older than their tenant's retention")
RETENTION_DERIVED_DELETED = Counter("im_api_retention_derived_deleted_total",
                                    "Copies of expired messages removed with them (versions, previews, questions, "
                                    "outbox records)", ["what"])
