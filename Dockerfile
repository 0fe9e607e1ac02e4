# One image for every Helpdesk IM service (im-api, delivery gateway/worker, presence, notifier) and imctl,
# with the agent console's built assets, which im-api serves under /console/.
# BASE_IMAGE and NODE_IMAGE let an offline build use locally built bases (deploy/offline/).
ARG BASE_IMAGE=python:3.11-slim
ARG NODE_IMAGE=node:20-bookworm-slim

# The console (clients/js + clients/console) built by Vite; only dist/ reaches the final image.
FROM ${NODE_IMAGE} AS console
LABEL io.helpdesk-im.build=app
ENV npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
WORKDIR /src
# Dependencies first, from the lockfiles only: a code change rebuilds without a download.
COPY clients/js/package.json clients/js/package-lock.json clients/js/
COPY clients/console/package.json clients/console/package-lock.json clients/console/
RUN cd clients/js && npm ci && cd ../console && npm ci
COPY clients/js/ clients/js/
COPY clients/console/ clients/console/
RUN cd clients/js && npm run build && cd ../console && npm run build && test -f dist/index.html

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
COPY services/notifier/pyproject.toml services/notifier/
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
      ./contracts ./services/runtime ./services/im-api ./services/delivery ./services/presence ./services/notifier ./deploy/imctl \
 && /opt/venv/bin/pip check

FROM ${BASE_IMAGE}
LABEL io.helpdesk-im.build=app
RUN useradd --system --uid 10001 --home-dir /app --create-home im
COPY --from=build /opt/venv /opt/venv
COPY --from=console /src/clients/console/dist /opt/helpdesk-im/console
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 IM_API_CONSOLE_DIR=/opt/helpdesk-im/console
USER im
WORKDIR /app
# Each compose service picks its command: im-api, im-delivery-gateway, im-delivery-worker, im-presence,
# im-notifier.
CMD ["im-api"]
