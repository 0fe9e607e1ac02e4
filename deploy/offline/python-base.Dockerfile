# The Python base for the service image when no registry is reachable: Debian (debootstrap,
# imported as helpdesk-im-test/debian) + python3 3.11 with venv. Used as BASE_IMAGE.
ARG DEBIAN_IMAGE=helpdesk-im-test/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3 python3-venv ca-certificates procps \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /usr/bin/python3 /usr/local/bin/python
# This machine's CA bundle (it may reach the package registries through a TLS proxy): a local
# test image only, built where it runs.
COPY host-ca.crt /etc/ssl/certs/host-ca.crt
ENV PIP_CERT=/etc/ssl/certs/host-ca.crt SSL_CERT_FILE=/etc/ssl/certs/host-ca.crt
