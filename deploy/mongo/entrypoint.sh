#!/bin/sh
# MongoDB for the compose stack (the official image): a replica set that requires authentication
# needs a key file its members share. One node's is made once, in its data volume, readable only
# by the server's user; then the image's own entrypoint runs (root user, init scripts, mongod).
set -eu
key=/data/db/helpdesk-im.keyfile
if [ ! -s "$key" ]; then
  head -c 756 /dev/urandom | base64 > "$key.tmp"
  mv "$key.tmp" "$key"
fi
chmod 400 "$key"
[ "$(id -u)" = 0 ] && chown mongodb:mongodb "$key"
exec docker-entrypoint.sh "$@"
