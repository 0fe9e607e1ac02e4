"""SecantusDB (tests only) behaving as the compose stack's official mongo image does: the first
start of an empty volume creates the root user and the services' user (same variables as the
mongo image and deploy/mongo/create-app-user.js), and from then on every command but the
handshake and ping requires authentication. SecantusDB takes users only while it runs without
--auth, so they are created by a loopback-only server of its own before the real one starts."""

from __future__ import annotations

import os
import subprocess

import pymongo
from pymongo.errors import OperationFailure

DATA = "/data/db"
DONE = os.path.join(DATA, ".helpdesk-im-users")
SERVER = ["/opt/secantus/bin/secantusd-py", "--storage-path", DATA, "--log-level", "WARNING"]
USER_EXISTS = 51003


def create_users() -> None:
    port = 27018
    server = subprocess.Popen([*SERVER, "--host", "127.0.0.1", "--port", str(port)])
    try:
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true",
                                     serverSelectionTimeoutMS=120_000)
        users = [(os.environ["MONGO_INITDB_ROOT_USERNAME"], os.environ["MONGO_INITDB_ROOT_PASSWORD"], ["root"]),
                 (os.environ["IM_MONGO_USER"], os.environ["IM_MONGO_PASSWORD"],
                  [{"role": "readWrite", "db": os.environ["IM_MONGO_DB"]}])]
        for name, password, roles in users:
            try:
                client.admin.command("createUser", name, pwd=password, roles=roles)
            except OperationFailure as exc:  # a start killed after it, before DONE was written
                if exc.code != USER_EXISTS and "already exists" not in str(exc):
                    raise
        client.close()
    finally:
        server.terminate()
        server.wait(120)
    with open(DONE, "w"):
        pass


if not os.path.exists(DONE):
    create_users()
os.execv(SERVER[0], [*SERVER, "--host", "0.0.0.0", "--port", "27017", "--auth"])
