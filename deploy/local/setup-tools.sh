#!/usr/bin/env bash
# Installs the Debian tools the test suite drives, when absent. As root it installs them; on a
# laptop (not root) it prints what to install and fails, so no test is ever skipped for a tool.
set -euo pipefail
need=()
command -v kcat >/dev/null 2>&1 || need+=(kcat)
# The console's browser tests drive Debian's Chromium through Playwright (Playwright's own browser
# download cannot work without internet access); node and npm build the console and the client.
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The compose tests run the stack in containers: podman (with runc; crun fails in this sandbox)
# and debootstrap to build the base image from Debian's packages when no registry serves images.
# Service-name DNS between containers needs netavark + aardvark-dns (only Recommends of podman),
# and published ports need iptables: named, so an install without Recommends still works.
if ! docker info >/dev/null 2>&1; then
  command -v podman >/dev/null 2>&1 || need+=(podman)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  command -v iptables >/dev/null 2>&1 || need+=(iptables)
  if command -v dpkg >/dev/null 2>&1; then
    for pkg in netavark aardvark-dns; do
      dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
  fi
fi
command -v java >/dev/null 2>&1 || echo "note: no java: tests fall back to Tansu (make test on CI requires Apache Kafka)" >&2
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "please install: ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
  exit 1
fi
