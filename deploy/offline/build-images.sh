#!/usr/bin/env bash
# Builds, from the registries this machine reaches, every image the offline compose override
# uses: a Debian base (debootstrap), a Python base, Apache Kafka (Debian JRE + the Maven Central
# jars), SecantusDB (tests only) and the product image from ./Dockerfile. Every step is cached:
# with nothing changed a second run takes seconds. Images are tagged helpdesk-im-test/* so they
# never collide with an operator's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${IM_CACHE_DIR:-$HOME/.cache/helpdesk-im}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
py=${PYTHON:-$root/.venv/bin/python}
say() { echo "[images] $*" >&2; }

if ! podman image exists helpdesk-im-test/debian:bookworm; then
  rootfs=$cache/rootfs-bookworm
  if [ ! -x "$rootfs/bin/sh" ]; then
    say "debootstrap bookworm (minbase) into $rootfs ..."
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  fi
  say "importing the Debian base image"
  tar -C "$rootfs" -c . | podman import - helpdesk-im-test/debian:bookworm >/dev/null
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
ca=${IM_HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
cp "$ca" "$ctx/host-ca.crt"
say "python base"
podman build -q -t helpdesk-im-test/python-base:bookworm -f "$here/python-base.Dockerfile" "$ctx" >/dev/null

say "Kafka 4.1.1 image (jars from Maven Central, cached)"
libs=$("$py" -c 'from imctl.servers import ensure_kafka_jars; print(ensure_kafka_jars())')
mkdir -p "$ctx/kafka"
cp -r "$libs" "$ctx/kafka/libs" && rm -f "$ctx/kafka/libs/.complete"
cp "$here/kafka-entrypoint.sh" "$here/kafka-broker-api-versions.sh" "$ctx/kafka/"
podman build -q -t helpdesk-im-test/kafka:4.1.1 -f "$here/kafka.Dockerfile" "$ctx/kafka" >/dev/null

say "SecantusDB image (tests only)"
podman build -q -t helpdesk-im-test/secantusdb:0.7.0b3 -f "$here/secantusdb.Dockerfile" "$ctx" >/dev/null

say "product image from ./Dockerfile"
podman build -q -t "${IM_IMAGE:-helpdesk-im-test/app:latest}" \
  --build-arg BASE_IMAGE=helpdesk-im-test/python-base:bookworm -f "$root/Dockerfile" "$root" >/dev/null
say "done"
