"""The MongoDB client every service uses: PyMongo's async API (Motor reached end of life)."""

from __future__ import annotations

from prometheus_client import Counter
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from .kafka import start_with_retry
from .settings import CommonSettings


COMMANDS = Counter("im_mongo_commands_total", "Commands this process sent to MongoDB, by command and collection",
                   ["command", "collection"])


class CommandCounter(monitoring.CommandListener):
    """Counts the commands the process sends: the database's cost is its commands, so this is what
    says which service spends them (issue 19's per-message accounting reads it from /metrics)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        # The command's first field names its collection (find, insert, update, aggregate, ...);
        # transaction commands and the like name none.
        target = event.command.get(event.command_name)
        COMMANDS.labels(event.command_name, target if isinstance(target, str) else "").inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


_COUNTER = CommandCounter()


def make_client(settings: CommonSettings, **overrides) -> AsyncMongoClient:
    # Retryable writes are the driver's default; not passed here, so IM_MONGO_URI can still set
    # `retryWrites` (keyword options win over the URI's: passing True silently overrode it).
    options = {
        "tz_aware": True,
        "serverSelectionTimeoutMS": int(settings.mongo_timeout_s * 1000),
        "connectTimeoutMS": int(settings.mongo_connect_timeout_s * 1000),
        "socketTimeoutMS": int(settings.mongo_socket_timeout_s * 1000),
        "event_listeners": [_COUNTER],
    }
    options.update(overrides)
    return AsyncMongoClient(settings.mongo_uri, **options)


async def connect(settings: CommonSettings, **overrides) -> tuple[AsyncMongoClient, AsyncDatabase]:
    """A client whose server answered `ping` (retried at start-up, see start_with_retry)."""
    client = make_client(settings, **overrides)

    async def ping() -> None:
        await client.admin.command("ping")

    await start_with_retry(ping, "mongodb", settings)
    return client, client[settings.mongo_db]


def compound_id(*parts: str) -> str:
    """A string `_id` made of several ids that no two different tuples share: each part is
    length-prefixed, so ("a:b", "c") and ("a", "b:c") can never meet (ids may contain ':')."""
    return "".join(f"{len(part)}:{part};" for part in parts)


def field_name(id_: str) -> str:
    """An id (an agent's) as a MongoDB field name in a map keyed by id: "." would split the path and
    "$" starts an operator, so both are escaped, with "%" as the escape character — the one
    escape every service uses, so the keys one writes are the keys another reads."""
    return id_.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


async def reachable(client: AsyncMongoClient) -> bool:
    try:
        await client.admin.command("ping")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        return False
