"""The settings every service shares, read from the same environment names everywhere.

Each service subclasses `CommonSettings` with its own env prefix (IM_API_, IM_DELIVERY_, ...);
the shared infrastructure keeps one name across services (IM_KAFKA_BOOTSTRAP, IM_JWT_SECRET, ...).
There is no default JWT secret: only the dev launcher makes one, loudly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def shared(name: str, **kwargs):
    """A field read from one environment name shared by every service (no per-service prefix)."""
    return Field(validation_alias=AliasChoices(name), **kwargs)


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IM_", extra="ignore", populate_by_name=True)

    kafka_bootstrap: str = shared("IM_KAFKA_BOOTSTRAP", default="127.0.0.1:9092",
                                  description="Kafka bootstrap servers, comma-separated.")
    body_topics_retention_hours: int = shared(
        "IM_BODY_TOPICS_RETENTION_HOURS", default=72, ge=1, le=24 * 365, description=(
            "How long Kafka keeps the records that carry message bodies (messages, conversations, "
            "assistance requests, dead letters, delivery's inbox): a redaction or retention cannot "
            "reach them, so this bounds how long a redacted body survives there. Consumers must "
            "never lag by more. Applied by `imctl topics create`, to existing topics too."))
    # How the services authenticate to Kafka: PLAINTEXT for the local dev broker and tests;
    # a deployment uses SASL_SSL (or SASL_PLAINTEXT on a private network) with one SCRAM
    # principal per service, whose ACLs `imctl topics create --acls` grants (README: Operating).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = shared(
        "IM_KAFKA_SECURITY_PROTOCOL", default="PLAINTEXT")
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = shared(
        "IM_KAFKA_SASL_MECHANISM", default="SCRAM-SHA-512")
    kafka_username: str | None = shared("IM_KAFKA_USERNAME", default=None,
                                        description="This service's SASL principal.")
    kafka_password: SecretStr | None = shared("IM_KAFKA_PASSWORD", default=None)
    kafka_ssl_cafile: str | None = shared("IM_KAFKA_SSL_CAFILE", default=None,
                                          description="CA bundle of the brokers' certificates (SSL, SASL_SSL).")
    # Tansu (the no-Java dev fallback) rejects idempotent producers; everything else keeps it on.
    kafka_idempotence: bool = shared("IM_KAFKA_IDEMPOTENCE", default=True)
    topic_prefix: str = shared("IM_TOPIC_PREFIX", default="",
                               description="Prefix of every topic name: empty in production; tests use it.")
    mongo_uri: str = shared("IM_MONGO_URI", default="mongodb://127.0.0.1:27017/?directConnection=true",
                            description="MongoDB URI: a replica set (transactions and change streams).")
    mongo_db: str = shared("IM_MONGO_DB", default="helpdesk_im", description="The database every service uses.")
    jwt_secret: SecretStr | None = shared(
        "IM_JWT_SECRET", default=None, min_length=16,
        description="DEVELOPMENT: HS256 secret of bearer tokens (whoever holds it can mint any token). "
                    "Production uses IM_JWT_PUBLIC_KEY or IM_JWKS_URL. No default.")
    jwt_public_key: str | None = shared(
        "IM_JWT_PUBLIC_KEY", default=None,
        description="PEM public key of the identity provider (RS256, ES256 or EdDSA tokens).")
    jwks_url: str | None = shared("IM_JWKS_URL", default=None,
                                  description="The identity provider's key set (RS256, ES256, EdDSA; by kid).")
    # The key set is refreshed this often in the background, and at most this often when a token
    # names a key id it does not hold (a rotation); no request ever waits for a fetch.
    jwks_refresh_s: float = shared("IM_JWKS_REFRESH_S", default=300.0)
    jwks_min_refresh_s: float = shared("IM_JWKS_MIN_REFRESH_S", default=30.0)
    # When set, a bearer token must name this audience and issuer: with an identity provider
    # shared by other applications, their tokens (same claims) are otherwise accepted here.
    jwt_audience: str | None = shared("IM_JWT_AUDIENCE", default=None,
                                      description="The `aud` every bearer token must carry (unset: any).")
    jwt_issuer: str | None = shared("IM_JWT_ISSUER", default=None,
                                    description="The `iss` every bearer token must carry (unset: any).")
    ticket_secret: SecretStr | None = shared(
        "IM_TICKET_SECRET", default=None, min_length=16,
        description="HS256 secret of stream tickets, shared by im-api (mints) and the gateways "
                    "(verify) only. Defaults to IM_JWT_SECRET (development).")
    # How long a MongoDB call waits for a reachable primary before failing (HTTP answers 503 then).
    mongo_timeout_s: float = shared("IM_MONGO_TIMEOUT_S", default=5.0)
    # Opening a connection, and the driver's server monitor's check: a server that answers its
    # heartbeat later than this is marked unknown and every pooled connection is dropped.
    mongo_connect_timeout_s: float = shared("IM_MONGO_CONNECT_TIMEOUT_S", default=3.0)
    # How long one reply from MongoDB may take: a server that accepts a command and never answers
    # (seen with SecantusDB wedged by a dropDatabase beside live transactions) otherwise holds
    # the caller for ever — a stop, a request, a consumer's batch.
    mongo_socket_timeout_s: float = shared("IM_MONGO_SOCKET_TIMEOUT_S", default=30.0)
    log_level: str = shared("IM_LOG_LEVEL", default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    # How long a consumer's poll waits for records before it polls again. It returns as soon as a
    # record arrives, so this adds no latency; longer only means fewer wake-ups of an idle consumer.
    kafka_poll_wait_ms: int = shared("IM_KAFKA_POLL_WAIT_MS", default=1000)
    # How long the broker holds a consumer's fetch when there is nothing new. It answers as soon as
    # a record is appended, so this adds no latency either; it bounds an idle consumer's fetch rate
    # (the broker's CPU) and how long a partition resumed after a backoff waits for its next fetch.
    kafka_fetch_wait_ms: int = shared("IM_KAFKA_FETCH_WAIT_MS", default=1000)
    # Retrying a transient failure (MongoDB or Kafka down): exponential from initial to max.
    retry_initial_s: float = shared("IM_RETRY_INITIAL_S", default=0.2)
    retry_max_s: float = shared("IM_RETRY_MAX_S", default=5.0)
    # Tenant webhooks (im-api checks the URL an admin sets; the notifier checks every address it
    # connects to): public https only, unless the operator allows plain http (development) or
    # named private networks (e.g. their own webhook gateway), comma-separated CIDRs.
    webhook_allow_http: bool = shared("IM_WEBHOOK_ALLOW_HTTP", default=False)
    webhook_allowed_networks: str = shared("IM_WEBHOOK_ALLOWED_NETWORKS", default="")
    # Connecting at start-up: containers may start before Kafka / MongoDB answer.
    connect_timeout_s: float = shared("IM_CONNECT_TIMEOUT_S", default=120.0)

    def require_auth(self) -> None:
        """Refuse to start without a way to verify tokens and stream tickets (no default secret, ever)."""
        if self.jwt_secret is None and not self.jwks_url and not self.jwt_public_key:
            raise SystemExit("IM_JWT_PUBLIC_KEY, IM_JWKS_URL or (development) IM_JWT_SECRET must be set; "
                             "`make run` makes a dev secret")

    def require_ticket_secret(self) -> None:
        """im-api and the gateways pass stream tickets: they alone need the ticket secret."""
        if self.ticket_secret is None and self.jwt_secret is None:
            raise SystemExit("IM_TICKET_SECRET must be set (stream tickets between im-api and the gateways)")
