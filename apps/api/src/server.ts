/**
 * The API process: parse config, build adapters and the app, listen, stop cleanly on SIGTERM.
 * Everything else lives in app.ts (the Fastify app) and wiring.ts (adapters).
 */
import { pino } from 'pino';
import { ConfigError, LOG_REDACT_PATHS, systemClock, webhookPolicyOf } from '@zepid/core';
import { canSwitchUsers, localPaths } from '@zepid/local/data';
import { buildApp } from './app.ts';
import { loadOrCreateDevToken, TokenRegistry } from './auth.ts';
import { DeploymentService } from './deployments.ts';
import type { ApiEnv } from './env.ts';
import { loadApiEnv } from './env.ts';
import { closeAll, createApiAdapters, startAll } from './wiring.ts';

async function loadTokens(env: ApiEnv): Promise<{ tokens: TokenRegistry; newToken: string | null }> {
  if (env.DEPLOY_API_TOKENS !== undefined) return { tokens: TokenRegistry.fromSetting(env.DEPLOY_API_TOKENS), newToken: null };
  if (env.DEPLOY_MODE !== 'local') {
    throw new ConfigError([{ variable: 'DEPLOY_API_TOKENS', message: 'is required in azure mode (orgId:token pairs, e.g. from Key Vault)' }]);
  }
  const { registry, newToken } = await loadOrCreateDevToken(localPaths(env.DATA_DIR).tokens);
  return { tokens: registry, newToken };
}

/**
 * Local builds and apps of several organizations on one machine are kept apart only by uid isolation
 * (a uid per app; the worker must be root). Without it every tenant's code runs as one user and can
 * read the others' environment through /proc, so several organizations are refused unless the
 * operator says on purpose that they need no isolation (README, "Local mode and its limits"). The
 * API runs beside the worker in local mode (`npm start`), as the same user: what it can do, the
 * worker can.
 */
function checkTenancy(env: ApiEnv, orgs: readonly string[]): void {
  if (env.DEPLOY_MODE !== 'local' || orgs.length <= 1 || !env.LOCAL_SINGLE_TENANT) return;
  if (env.LOCAL_BUILD_ISOLATION !== 'none' && canSwitchUsers()) return;
  const why = env.LOCAL_BUILD_ISOLATION === 'none' ? 'LOCAL_BUILD_ISOLATION=none' : 'the service does not run as root with setpriv and prlimit';
  throw new ConfigError([
    {
      variable: 'LOCAL_SINGLE_TENANT',
      message: `DEPLOY_API_TOKENS names ${orgs.length} organizations, but local builds and apps cannot be isolated from each other (${why}): each could read the others' env variables. Keep one organization, run as root, or set LOCAL_SINGLE_TENANT=false if they trust each other`,
    },
  ]);
}

async function main(): Promise<void> {
  let env: ApiEnv;
  try {
    env = loadApiEnv(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`api: ${error.message}`);
      process.exit(78);
    }
    throw error;
  }
  // Database, artifacts, secrets and the token file are created owner-only.
  process.umask(0o077);
  const logger = pino({ level: env.LOG_LEVEL, base: { service: 'api' }, redact: { paths: LOG_REDACT_PATHS, censor: '[redacted]' } });

  let tokens: TokenRegistry;
  let newToken: string | null;
  try {
    ({ tokens, newToken } = await loadTokens(env));
    checkTenancy(env, tokens.orgs);
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`api: ${error.message}`);
      process.exit(78);
    }
    throw error;
  }

  const adapters = await createApiAdapters(env, logger);
  await startAll(adapters);
  const service = new DeploymentService(adapters, { maxActivePerOrg: env.MAX_ACTIVE_DEPLOYMENTS_PER_ORG, objectUploadWindowMs: env.OBJECT_UPLOAD_WINDOW_MS, clock: systemClock, logger });
  const app = await buildApp(
    {
      adapters,
      service,
      tokens,
      mode: env.DEPLOY_MODE,
      startedAt: Date.now(),
      // Until an organization has completed deployments to go by (then: what they took, estimates.ts).
      estimatedDuration: env.DEPLOY_MODE === 'azure' ? '3-10 minutes' : 'a few seconds for static sites, under a minute for most npm builds',
      retentionDays: env.RETENTION_DAYS,
      rateLimitPerMinute: env.RATE_LIMIT_PER_MINUTE,
      workerStaleMs: 30_000,
      clock: systemClock,
      streamsPerToken: env.SSE_MAX_STREAMS_PER_TOKEN,
      maxStreams: env.SSE_MAX_STREAMS,
      streamResyncMs: env.SSE_RESYNC_MS,
      streamLeaseTtlMs: env.SSE_LEASE_TTL_MS,
      webhookPolicy: webhookPolicyOf(env),
    },
    logger,
  );

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping: no new requests, finishing in-flight ones');
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    void app
      .close()
      .then(() => closeAll(adapters))
      .then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  const address = await app.listen({ port: env.PORT, host: env.HOST });
  logger.info({ address, mode: env.DEPLOY_MODE }, 'api listening');
  if (newToken !== null) {
    // Printed once, on the first start: only its hash is stored.
    process.stdout.write(
      `\n  Zepid Deploy dev token for organization "local" (shown once; only its hash is stored in ${localPaths(env.DATA_DIR).tokens}):\n\n` +
        `    export TOKEN=${newToken}\n\n`,
    );
  }
}

await main();
