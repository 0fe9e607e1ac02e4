# A MongoDB-wire-protocol server for TESTS ONLY (SecantusDB is GPL and never part of the product
# image): stands in for the official mongo image where no registry is reachable.
ARG PYTHON_IMAGE=helpdesk-im-test/python-base:bookworm
FROM ${PYTHON_IMAGE}
ARG SECANTUS_VERSION=0.7.0b3
RUN python3 -m venv /opt/secantus && /opt/secantus/bin/pip install -q "SecantusDB==${SECANTUS_VERSION}" pymongo \
 && useradd --system --uid 999 --create-home mongodb && mkdir -p /data/db && chown mongodb /data/db
USER mongodb
VOLUME /data/db
EXPOSE 27017
CMD ["/opt/secantus/bin/secantusd-py", "--host", "0.0.0.0", "--port", "27017", "--storage-path", "/data/db", "--log-level", "WARNING"]
