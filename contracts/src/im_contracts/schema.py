"""JSON Schema and AsyncAPI documents generated from the event and frame models (`make contracts`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .events import ALL_EVENTS, SCHEMA_VERSION
from .frames import frames_schema
from .notifications import NotificationWebhook
from .topics import ALL_TOPICS

GENERATED_DIR = Path(__file__).resolve().parents[2] / "generated"


def json_schemas() -> dict[str, dict[str, Any]]:
    return {event.__name__: event.model_json_schema(mode="serialization") for event in ALL_EVENTS}


def asyncapi() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in ALL_TOPICS:
        channel_id = topic.base_name.replace(".", "_").replace("-", "_")
        refs = {}
        for name in topic.event_types():
            messages[name] = {
                "name": name,
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{name}"},
            }
            refs[name] = {"$ref": f"#/components/messages/{name}"}
        channels[channel_id] = {
            "address": topic.base_name,
            "description": topic.description,
            "messages": refs,
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": topic.key_rule},
                    "partitions": topic.partitions,
                    "topicConfiguration": topic.topic_config() or None,
                    "bindingVersion": "0.5.0",
                }
            },
            "x-internal": topic.internal,
        }
        operations[f"publish_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
        }
    schemas: dict[str, Any] = {}
    for name, schema in json_schemas().items():
        defs = schema.pop("$defs", {})
        schemas.update(defs)
        schemas[name] = schema
    text = json.dumps(schemas).replace("#/$defs/", "#/components/schemas/")
    stream_channel(channels, operations, messages)
    schemas = {**json.loads(text), **stream_schemas()}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Helpdesk IM events",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Every Kafka topic and event of Helpdesk IM (generated from contracts/).",
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


# Frame schemas share names with events (`Typing`, `Message`): in AsyncAPI they carry this prefix.
STREAM_PREFIX = "Stream"


def stream_schemas() -> dict[str, Any]:
    defs = frames_schema()["$defs"]
    text = json.dumps(defs).replace('"#/$defs/', f'"#/components/schemas/{STREAM_PREFIX}')
    return {f"{STREAM_PREFIX}{name}": schema for name, schema in json.loads(text).items()}


def stream_channel(channels: dict[str, Any], operations: dict[str, Any], messages: dict[str, Any]) -> None:
    """The WebSocket stream as an AsyncAPI channel: what the server sends (`ServerFrame`) and what
    it receives (`ClientFrame`), one message per frame type, the close codes beside them."""
    document = frames_schema()
    refs: dict[str, dict[str, list[dict[str, str]]]] = {"send": {}, "receive": {}}
    for action, union in (("send", "ServerFrame"), ("receive", "ClientFrame")):
        for option in document["$defs"][union]["oneOf"]:
            name = option["$ref"].removeprefix("#/$defs/")
            message = f"{STREAM_PREFIX}{name}"
            messages[message] = {
                "name": name,
                "title": document["$defs"][name].get("description", name).split("\n")[0],
                "contentType": "application/json",
                "payload": {"$ref": f"#/components/schemas/{message}"},
            }
            refs[action][message] = {"$ref": f"#/components/messages/{message}"}
    channels["stream"] = {
        "address": "/v1/stream",
        "title": "The agent's WebSocket stream",
        "description": "GET /v1/stream?ticket=…&cursor=…: queued frames (with a cursor, replayed on resume) and "
                       "live frames (none, never replayed) to the client; acks and activity from it. "
                       "`x-close-codes` says what a client does on each close code.",
        "messages": {**refs["send"], **refs["receive"]},
        "bindings": {"ws": {"method": "GET", "bindingVersion": "0.1.0"}},
        "x-close-codes": document["x-close-codes"],
    }
    for action in ("send", "receive"):
        operations[f"{action}_stream"] = {
            "action": action,
            "channel": {"$ref": "#/channels/stream"},
            "messages": [{"$ref": f"#/channels/stream/messages/{m}"} for m in refs[action]],
        }


def rendered() -> dict[str, str]:
    """Relative path → file text, exactly as committed."""
    out = {
        f"schemas/{name}.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }
    out["asyncapi.json"] = json.dumps(asyncapi(), indent=2, sort_keys=True) + "\n"
    out["frames.json"] = json.dumps(frames_schema(), indent=2, sort_keys=True) + "\n"
    out["webhook.json"] = json.dumps(NotificationWebhook.model_json_schema(mode="serialization"),
                                     indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path = GENERATED_DIR) -> list[Path]:
    written = []
    for rel, text in rendered().items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else GENERATED_DIR):
        print(path)
