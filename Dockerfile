# One image for every Helpdesk IM service (im-api, delivery gateway/worker, presence) and imctl.
# BASE_IMAGE lets an offline build use a locally built Debian base (deploy/offline/).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# Every layer built from here carries it, so a local rebuild can prune its own stale layers.
LABEL io.helpdesk-im.build=app
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/venv
# Third-party dependencies first, from the project files only: a code change rebuilds in seconds.
COPY constraints.txt ./
COPY contracts/pyproject.toml contracts/
COPY services/runtime/pyproject.toml services/runtime/
COPY services/im-api/pyproject.toml services/im-api/
COPY services/delivery/pyproject.toml services/delivery/
COPY services/presence/pyproject.toml services/presence/
COPY deploy/imctl/pyproject.toml deploy/imctl/
RUN python3 -c 'import glob, tomllib; print("\n".join(d for p in glob.glob("**/pyproject.toml", recursive=True) \
      for d in tomllib.load(open(p, "rb"))["project"]["dependencies"] if not d.startswith("helpdesk-im-")))' \
      > third-party.txt \
 && /opt/venv/bin/pip install -c constraints.txt -r third-party.txt "setuptools>=68"
COPY contracts/ contracts/
COPY services/ services/
COPY deploy/imctl/ deploy/imctl/
# Our packages only (no index needed: setuptools is already in the venv).
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation \
      ./contracts ./services/runtime ./services/im-api ./services/delivery ./services/presence ./deploy/imctl \
 && /opt/venv/bin/pip check

FROM ${BASE_IMAGE}
LABEL io.helpdesk-im.build=app
RUN useradd --system --uid 10001 --home-dir /app --create-home im
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER im
WORKDIR /app
# Each compose service picks its command: im-api, im-delivery-gateway, im-delivery-worker, im-presence.
CMD ["im-api"]
