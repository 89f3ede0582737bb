# syntax=docker/dockerfile:1
#
# One image recipe, two targets:
#   docker build --target api    -t zepid-deploy-api .
#   docker build --target worker -t zepid-deploy-worker .
# No compiler and no output tree: Node 24 runs the TypeScript sources (type stripping), so the image
# holds the sources and production dependencies. One RUN strips the types ahead of time into
# node_modules/.cache/zepid-js (scripts/precompiled.mjs, Node's own stripper, lines kept), and the
# services load that with --import=./scripts/precompiled-loader.mjs: they then never load the
# stripper themselves (~25 MB of RSS each; BENCHMARKS.md).
#
# PID 1 is tini (from Debian): it forwards SIGTERM to node and reaps orphaned processes. The apps
# handle SIGTERM themselves (stop taking work, finish or hand back what is in flight, exit), but the
# worker starts child processes (local builds and app processes when the builder/runtime are local,
# as in docker-compose), and node as PID 1 would leave their orphans as zombies.

ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS base
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app

# Every workspace's package.json, and nothing else, so the dependency layer below is rebuilt only
# when a manifest or the lockfile changes (and new workspaces need no edit here).
FROM base AS manifests
COPY . /src
RUN cd /src \
    && find . -name package.json -not -path '*/node_modules/*' -print0 \
       | xargs -0 -I '{}' cp --parents '{}' /app/ \
    && cp package-lock.json /app/

FROM base AS deps
COPY --from=manifests /app/ ./
# Production dependencies of every workspace; the workspace packages themselves are symlinks into
# packages/ and apps/, which the runtime stage fills with sources. (No BuildKit cache mount: ACR
# Tasks, which `azd up` builds with, must be able to build this file too.)
RUN npm ci --omit=dev --no-audit --no-fund \
    && npm cache clean --force

FROM base AS runtime
COPY --from=deps /app/ ./
COPY packages/ ./packages/
COPY apps/ ./apps/
COPY scripts/precompiled.mjs scripts/precompiled-loader.mjs ./scripts/
# DATA_DIR defaults to ./.data: scratch space the unprivileged user must be able to write.
RUN node scripts/precompiled.mjs \
    && mkdir -p /app/.data && chown node:node /app/.data
USER node
ENTRYPOINT ["/usr/bin/tini", "--"]

FROM runtime AS api
ENV HOST=0.0.0.0 \
    PORT=3010
EXPOSE 3010
# No curl in slim images: node's own fetch probes the liveness endpoint.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3010) + '/health/live').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Node flags as in scripts/node-flags.ts (a small young generation and the precompiled sources keep
# RSS in budget; see BENCHMARKS.md).
CMD ["node", "--max-semi-space-size=4", "--no-maglev", "--import=./scripts/precompiled-loader.mjs", "apps/api/src/server.ts"]

FROM runtime AS worker
# The worker has no API; with HEALTH_PORT set it answers /health/live and /health/ready there.
ENV HEALTH_PORT=8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.HEALTH_PORT || 8080) + '/health/live').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "--max-semi-space-size=4", "--no-maglev", "--import=./scripts/precompiled-loader.mjs", "apps/worker/src/main.ts"]
