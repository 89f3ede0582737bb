/**
 * The API process: parse config, build adapters and the app, listen, stop cleanly on SIGTERM.
 * Everything else lives in app.ts (the Fastify app) and wiring.ts (adapters).
 */
import { pino } from 'pino';
import { ConfigError, LOG_REDACT_PATHS, systemClock, webhookPolicyOf } from '@zepid/core';
import { localPaths } from '@zepid/local/data';
import { buildApp } from './app.ts';
import { loadOrCreateDevToken, TokenRegistry } from './auth.ts';
import type { TokenVerifier } from './auth.ts';
import { DeploymentService } from './deployments.ts';
import type { ApiEnv } from './env.ts';
import { loadApiEnv } from './env.ts';
import { closeAll, createApiAdapters, startAll } from './wiring.ts';

async function loadTokens(env: ApiEnv): Promise<{ tokens: TokenVerifier; newToken: string | null }> {
  if (env.DEPLOY_API_TOKENS !== undefined) return { tokens: TokenRegistry.fromSetting(env.DEPLOY_API_TOKENS), newToken: null };
  if (env.DEPLOY_MODE !== 'local') {
    throw new ConfigError([{ variable: 'DEPLOY_API_TOKENS', message: 'is required in azure mode (orgId:token pairs, e.g. from Key Vault)' }]);
  }
  const { registry, newToken } = await loadOrCreateDevToken(localPaths(env.DATA_DIR).tokens);
  return { tokens: registry, newToken };
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

  let tokens: TokenVerifier;
  let newToken: string | null;
  try {
    ({ tokens, newToken } = await loadTokens(env));
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`api: ${error.message}`);
      process.exit(78);
    }
    throw error;
  }

  const adapters = await createApiAdapters(env, logger);
  await startAll(adapters);
  const service = new DeploymentService(adapters, { maxActivePerOrg: env.MAX_ACTIVE_DEPLOYMENTS_PER_ORG, clock: systemClock, logger });
  const app = await buildApp(
    {
      adapters,
      service,
      tokens,
      mode: env.DEPLOY_MODE,
      startedAt: Date.now(),
      estimatedDuration: env.DEPLOY_MODE === 'azure' ? '3-10 minutes' : 'under a minute for static sites, 1-3 minutes with npm install',
      retentionDays: env.RETENTION_DAYS,
      rateLimitPerMinute: env.RATE_LIMIT_PER_MINUTE,
      workerStaleMs: 30_000,
      clock: systemClock,
      streamsPerToken: env.SSE_MAX_STREAMS_PER_TOKEN,
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
