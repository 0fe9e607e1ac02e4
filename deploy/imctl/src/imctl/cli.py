"""imctl: `up` (the dev launcher), `token`, `topics create|describe`, `migrate`, `assist`,
`dead-letters`, `tail`. Every subcommand has --help; long steps print progress."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from . import launcher, tokens
from .topics import create_topics, describe_topics


def _bootstrap_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", default=os.environ.get("IM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                   help="Kafka bootstrap servers (env IM_KAFKA_BOOTSTRAP)")
    p.add_argument("--prefix", default=os.environ.get("IM_TOPIC_PREFIX", ""),
                   help="topic name prefix (env IM_TOPIC_PREFIX; empty in production)")


def cmd_up(args) -> int:
    return launcher.up(launcher.LaunchConfig.from_env(kafka=args.kafka))


def cmd_token(args) -> int:
    secret = os.environ.get("IM_JWT_SECRET")
    if not secret:
        print("IM_JWT_SECRET is not set (make run prints how to get the dev one)", file=sys.stderr)
        return 2
    print(tokens.mint(secret, args.tenant, args.agent, args.role, args.ttl))
    return 0


def cmd_topics(args) -> int:
    if args.action == "create":
        created = asyncio.run(create_topics(args.bootstrap, args.prefix, args.partitions,
                                            progress=lambda m: print(m, file=sys.stderr)))
        print(f"{len(created)} topics created", file=sys.stderr)
        return 0
    rows = asyncio.run(describe_topics(args.bootstrap, args.prefix))
    for row in rows:
        state = f"{row['partitions']} partitions" if row["exists"] else "MISSING"
        print(f"{row['topic']:<45} {state:<16} key={row['key']} {row['config'] or ''}")
    return 0 if all(r["exists"] for r in rows) else 1


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
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("topics", help="create or describe the contract's topics")
    p.add_argument("action", choices=["create", "describe"])
    _bootstrap_arg(p)
    p.add_argument("--partitions", type=int, default=None,
                   help="override every topic's partition count (default: from contracts)")
    p.set_defaults(func=cmd_topics)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
