"""imctl: the Helpdesk IM operator's and developer's command line. `imctl COMMAND --help` for each."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
from datetime import datetime

from . import acls, launcher, tokens
from .topics import create_topics, describe_topics


def _bootstrap_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", default=os.environ.get("IM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                   help="Kafka bootstrap servers (env IM_KAFKA_BOOTSTRAP)")
    p.add_argument("--prefix", default=os.environ.get("IM_TOPIC_PREFIX", ""),
                   help="topic name prefix (env IM_TOPIC_PREFIX; empty in production)")


def _mongo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mongo-uri", default=os.environ.get("IM_MONGO_URI", "mongodb://127.0.0.1:27017/?directConnection=true"),
                   help="MongoDB URI (env IM_MONGO_URI)")
    p.add_argument("--db", default=os.environ.get("IM_MONGO_DB", "helpdesk_im"), help="database (env IM_MONGO_DB)")


def _admin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", default=os.environ.get("IM_ADMIN_TOKEN"),
                   help="an admin JWT of the tenant (env IM_ADMIN_TOKEN: keeps it out of shell history); "
                        "verified with IM_JWT_SECRET or IM_JWKS_URL")


def _audited(args, action: str, details: dict) -> int | None:
    """None when allowed (and recorded); else the exit status after saying why."""
    from .ops import Refused, authorize_and_audit

    if not args.token:
        print(f"{action} shows message bodies: give an admin token of the tenant (--token or IM_ADMIN_TOKEN)",
              file=sys.stderr)
        return 2
    try:
        access = asyncio.run(authorize_and_audit(args.token, args.tenant, action, details, args.mongo_uri, args.db))
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    print(f"audited as {access.principal.subject} (record {access.audit_id})", file=sys.stderr)
    return None


def cmd_migrate(args) -> int:
    from .ops import migrate

    done = asyncio.run(migrate(args.mongo_uri, args.db, progress=lambda m: print(m, file=sys.stderr, flush=True)))
    print(f"indexes in place: {len(done)} steps", file=sys.stderr)
    return 0


def cmd_tail(args) -> int:
    from .ops import Refused, describe_message, tail

    refused = _audited(args, "tail", {"conversation": args.conversation, "from_beginning": args.from_beginning})
    if refused is not None:
        return refused

    def show(event) -> None:
        print(event.model_dump_json() if args.json else describe_message(event), flush=True)

    try:
        count = asyncio.run(tail(args.bootstrap, args.prefix, args.tenant, show, conversation=args.conversation,
                                 from_beginning=args.from_beginning, follow=not args.no_follow, limit=args.limit))
    except KeyboardInterrupt:
        return 0
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{count} messages", file=sys.stderr)
    return 0


def cmd_audit(args) -> int:
    from .ops import Refused, audit_records, authorize_and_audit

    if not args.token:
        print("the audit log is the tenant admins': give an admin token of the tenant (--token or IM_ADMIN_TOKEN)",
              file=sys.stderr)
        return 2
    try:
        asyncio.run(authorize_and_audit(args.token, args.tenant, "audit", {"action": args.action}, args.mongo_uri,
                                        args.db))
        records = asyncio.run(audit_records(args.mongo_uri, args.db, args.tenant, args.action, args.limit))
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    for r in records:
        if args.json:
            print(json.dumps(r, default=str))
        else:
            target = " ".join(f"{k}={v}" for k, v in (r.get("target") or {}).items())
            print(f"{r['at']:%Y-%m-%dT%H:%M:%S}Z {r['source']:<6} {r['actor']} ({r['role']}) {r['action']} {target}"
                  f"{' request=' + r['request_id'] if r.get('request_id') else ''}")
    print(f"{len(records)} audit records", file=sys.stderr)
    return 0


def _rfc3339(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r} (e.g. 2026-11-27T00:00:00Z)") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a zone (RFC 3339, e.g. 2026-11-27T00:00:00Z)")
    return value


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def cmd_export(args) -> int:
    from .ops import Refused, Unknown, atomic_file, export

    ranged = args.start is not None or args.end is not None
    if bool(args.conversation) == ranged:
        print("give --conversation ID (one thread), or --from and --to (the tenant's threads between them)",
              file=sys.stderr)
        return 2
    if ranged and (args.start is None or args.end is None):
        print("give both --from and --to", file=sys.stderr)
        return 2
    if ranged and args.end <= args.start:
        print(f"--to must be after --from (got from {args.start.isoformat()} to {args.end.isoformat()})",
              file=sys.stderr)
        return 2
    if not args.token:
        print("an export holds message bodies: give an admin token of the tenant (--token or IM_ADMIN_TOKEN)",
              file=sys.stderr)
        return 2
    if args.out is not None:
        out = os.path.abspath(args.out)
        if os.path.isdir(out) or not os.path.isdir(os.path.dirname(out)):
            print(f"--out {args.out}: give a file in an existing folder", file=sys.stderr)
            return 2
    else:
        out = "-"

    def sink():
        return atomic_file(out) if out != "-" else contextlib.nullcontext(sys.stdout.buffer)

    try:
        done = asyncio.run(export(args.token, args.tenant, args.mongo_uri, args.db, sink,
                                  conversation=args.conversation, start=args.start, end=args.end, out=out))
        sys.stdout.flush()
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 3
    except Unknown as exc:
        print(exc, file=sys.stderr)
        return 1
    except BrokenPipeError:  # `imctl export ... | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    print(f"audited as {done.access.principal.subject} (record {done.access.audit_id}); "
          f"{_count(done.conversations, 'conversation')}, {_count(done.messages, 'message')} exported"
          f"{' to ' + out if out != '-' else ''}", file=sys.stderr)
    return 0


def cmd_up(args) -> int:
    return launcher.up(launcher.LaunchConfig.from_env(kafka=args.kafka))


def cmd_token(args) -> int:
    secret = os.environ.get("IM_JWT_SECRET")
    if not secret:
        print("IM_JWT_SECRET is not set (make run prints how to get the dev one)", file=sys.stderr)
        return 2
    print(tokens.mint(secret, args.tenant, args.agent, args.role, args.ttl,
                      audience=tokens.KAFKA_AUDIENCE if args.for_kafka else None))
    return 0


def cmd_topics(args) -> int:
    if args.action == "create":
        created = asyncio.run(create_topics(args.bootstrap, args.prefix, args.partitions,
                                            progress=lambda m: print(m, file=sys.stderr)))
        print(f"{len(created)} topics created", file=sys.stderr)
        if args.acls:
            granted = asyncio.run(grant_acls(args.bootstrap, args.prefix))
            print(f"{granted} ACLs granted to {', '.join(acls.principal_name(s) for s in acls.PRINCIPALS)}",
                  file=sys.stderr)
        return 0
    rows = asyncio.run(describe_topics(args.bootstrap, args.prefix))
    for row in rows:
        state = f"{row['partitions']} partitions" if row["exists"] else "MISSING"
        print(f"{row['topic']:<45} {state:<16} key={row['key']} {row['config'] or ''}")
    return 0 if all(r["exists"] for r in rows) else 1


async def grant_acls(bootstrap: str, prefix: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    from .topics import kafka_options

    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        return await acls.grant(admin, prefix, group_prefix=prefix)
    finally:
        await admin.close()


def cmd_assist(args) -> int:
    from im_contracts.models import Related

    from .kafka_tools import assistance_request, publish_assistance

    secret = os.environ.get("IM_JWT_SECRET")
    if not secret:
        print("IM_JWT_SECRET is not set: the request must carry a service token", file=sys.stderr)
        return 2
    if bool(args.ticket) == bool(args.chat):
        print("give exactly one of --ticket or --chat", file=sys.stderr)
        return 2
    related = Related(type="ticket" if args.ticket else "chat", id=args.ticket or args.chat, title=args.title)
    agents = [a.strip() for a in (args.to or "").split(",") if a.strip()]
    teams = [t.strip() for t in (args.team or "").split(",") if t.strip()]
    if not agents and not teams:
        print("give --to (agents), --team (team ids) or both", file=sys.stderr)
        return 2
    request = assistance_request(args.tenant, args.sender, agents, related, args.text, args.request_id, teams)
    partition, offset = asyncio.run(publish_assistance(
        args.bootstrap, args.prefix, secret, request,
        idempotence=os.environ.get("IM_KAFKA_IDEMPOTENCE", "true") == "true"))
    print(json.dumps({"request_id": request.request_id, "partition": partition, "offset": offset}))
    return 0


def cmd_dead_letters(args) -> int:
    from .kafka_tools import describe_letter, read_dead_letters

    if args.bodies:
        if not args.tenant:
            print("--bodies needs --tenant: bodies are shown one tenant at a time, audited", file=sys.stderr)
            return 2
        refused = _audited(args, "dead-letters --bodies", {"follow": args.follow})
        if refused is not None:
            return refused

    def show(letter, raw: bytes) -> None:
        if letter is None:
            print(f"(unreadable dead letter, {len(raw)} bytes)")
        elif args.tenant is None or letter.tenant_id == args.tenant:
            # The original record (a message body, perhaps) only with --bodies, i.e. audited.
            shown = letter if args.bodies else letter.model_copy(update={"original_value_b64": ""})
            print(shown.model_dump_json() if args.json else describe_letter(letter), flush=True)
            if args.bodies and not args.json and letter.original_value_b64:
                print(f"    original: {base64.b64decode(letter.original_value_b64)!r}", flush=True)

    try:
        count = asyncio.run(read_dead_letters(args.bootstrap, args.prefix, args.follow, show))
    except KeyboardInterrupt:
        return 0
    print(f"{count} dead letters", file=sys.stderr)
    return 0


def cmd_compose(args) -> int:
    from .compose import compose_down, compose_up

    if args.action == "up":
        return compose_up(args.project)
    return compose_down(args.project, volumes=args.volumes)


def cmd_env_example(args) -> int:
    from .envdoc import ENV_EXAMPLE, render, write

    if args.check:
        current = ENV_EXAMPLE.read_text() if ENV_EXAMPLE.exists() else ""
        if current != render():
            print(f"{ENV_EXAMPLE} is out of date: run `imctl env-example`", file=sys.stderr)
            return 1
        return 0
    print(write(), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imctl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="run the whole stack here in the foreground (make run)")
    p.add_argument("--kafka", choices=["apache", "tansu", "auto"], default=None,
                   help="Kafka to run (env IM_DEV_KAFKA; default auto = Apache Kafka when Java is present)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("token", help="mint a dev JWT (HS256 with IM_JWT_SECRET)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--agent", required=True, help="the subject: agent id (or service name)")
    p.add_argument("--role", choices=tokens.ROLES, default="agent")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    p.add_argument("--for-kafka", action="store_true",
                   help=f"for a Kafka record's authorization header (audience {tokens.KAFKA_AUDIENCE}); "
                        "such a token is refused over HTTP")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("topics", help="create or describe the contract's topics")
    p.add_argument("action", choices=["create", "describe"])
    _bootstrap_arg(p)
    p.add_argument("--partitions", type=int, default=None,
                   help="override every topic's partition count (default: from contracts)")
    p.add_argument("--acls", action="store_true",
                   help="also grant each service's principal (helpdesk-im-<service>) its topics and groups; "
                        "run as the admin principal (IM_KAFKA_USERNAME) on a broker that enforces ACLs")
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("assist", help="publish an assistance request, as a ticketing service would")
    _bootstrap_arg(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--from", dest="sender", required=True, help="the requesting agent (the sender)")
    p.add_argument("--to", help="comma-separated agent ids asked to help")
    p.add_argument("--team", help="comma-separated team ids asked to help (one member claims it)")
    p.add_argument("--ticket", help="the related ticket id")
    p.add_argument("--chat", help="the related live-chat id")
    p.add_argument("--title", help="the Related tag's title")
    p.add_argument("--request-id", help="idempotency key (default: a new uuid)")
    p.add_argument("text", help="the message to post")
    p.set_defaults(func=cmd_assist)

    p = sub.add_parser("dead-letters", help="list the dead-lettered records with their reasons")
    _bootstrap_arg(p)
    p.add_argument("--tenant", help="only this tenant's")
    p.add_argument("--follow", action="store_true", help="keep listening for new ones")
    p.add_argument("--json", action="store_true", help="one JSON document per line")
    p.add_argument("--bodies", action="store_true",
                   help="also show each original record (needs --tenant and an admin token; audited)")
    _admin_args(p)
    _mongo_args(p)
    p.set_defaults(func=cmd_dead_letters)

    p = sub.add_parser("migrate", help="create every service's MongoDB indexes (idempotent)")
    _mongo_args(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("tail", help="follow a tenant's messages as they are posted (admin token; audited)")
    _bootstrap_arg(p)
    _mongo_args(p)
    _admin_args(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--conversation", help="only this conversation's messages")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest retained message")
    p.add_argument("--no-follow", action="store_true", help="stop at the end of the log instead of waiting")
    p.add_argument("--limit", type=int, help="stop after this many messages")
    p.add_argument("--json", action="store_true", help="one MessagePosted JSON document per line")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("audit", help="a tenant's audit log, newest first: im-api's and imctl's own (admin token)")
    _mongo_args(p)
    _admin_args(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--action", help="only this action (message.edit, message.delete, tail, ...)")
    p.add_argument("--limit", type=int, default=100, help="at most this many records (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON document per line")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("export", help="export a thread, or a tenant's threads between two times, as JSON lines "
                                      "(admin token; audited)")
    _mongo_args(p)
    _admin_args(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--conversation", help="the thread to export")
    p.add_argument("--from", dest="start", type=_rfc3339, metavar="RFC3339",
                   help="with --to: every thread with messages posted from this time (inclusive, with a zone)")
    p.add_argument("--to", dest="end", type=_rfc3339, metavar="RFC3339", help="... until this time (exclusive)")
    p.add_argument("--out", help="write to this file (whole or not at all; mode 0600) instead of stdout")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("compose", help="the compose stack in containers (docker, or podman offline)")
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--project", default="helpdesk-im", help="compose project name")
    p.add_argument("--volumes", action="store_true", help="with down: also remove the data volumes")
    p.set_defaults(func=cmd_compose)

    p = sub.add_parser("env-example", help="write deploy/.env.example from the settings classes")
    p.add_argument("--check", action="store_true", help="only check that it is up to date")
    p.set_defaults(func=cmd_env_example)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
