# One image for every Helpdesk IM service (im-api, delivery gateway/worker, presence) and imctl.
# BASE_IMAGE lets an offline build use a locally built Debian base (deploy/offline/).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY constraints.txt ./
COPY contracts/ contracts/
COPY services/ services/
COPY deploy/imctl/ deploy/imctl/
RUN /opt/venv/bin/pip install -c constraints.txt \
      ./contracts ./services/runtime ./services/im-api ./services/delivery ./services/presence \
      ./deploy/imctl

FROM ${BASE_IMAGE}
RUN useradd --system --uid 10001 --home-dir /app --create-home im
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER im
WORKDIR /app
# Each compose service picks its command: im-api, im-delivery-gateway, im-delivery-worker, im-presence.
CMD ["im-api"]
