import Type from 'typebox';
import type { Static, TObject } from 'typebox';
// The subpath, not the package: loading every Azure SDK just to read config would cost ~100 MB of RSS in local mode.
import { azureEnv } from '@zepid/azure/env';
import { commonEnv, parseEnv, positiveInt } from '@zepid/core';

/** The API's configuration: parsed once in server.ts; nothing else reads process.env. */
const apiEnv = {
  ...commonEnv,
  ...azureEnv,
  PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 3010, description: 'HTTP port of the API.' }),
  HOST: Type.String({ default: '127.0.0.1', description: 'Interface to listen on; 0.0.0.0 in containers.' }),
  DEPLOY_API_TOKENS: Type.Optional(
    Type.String({
      description:
        'Comma-separated orgId:token pairs; orgId/name:token names a token (deployments record it as who started them). Unset in local mode: one dev token is generated on first start and printed once.',
    }),
  ),
  MAX_ACTIVE_DEPLOYMENTS_PER_ORG: positiveInt(3, 1_000_000, 'Queued plus in-progress deployments an org may have; more is a 429.'),
  RATE_LIMIT_PER_MINUTE: positiveInt(600, 1_000_000, 'Requests per token per minute; more is a 429.'),
  LOCAL_BUILD_ISOLATION: Type.Enum(['auto', 'uid', 'none'], {
    default: 'auto',
    description: 'As the worker\'s: read here to refuse several organizations when local builds cannot be isolated.',
  }),
  LOCAL_SINGLE_TENANT: Type.Boolean({
    default: true,
    description: 'Local mode without uid isolation: refuse more than one organization in DEPLOY_API_TOKENS. false: accept them on purpose, unisolated.',
  }),
  SSE_MAX_STREAMS_PER_TOKEN: positiveInt(20, 100_000, 'Event streams (SSE) one token may hold open across all API replicas (counted by stream leases in the store); more is a 429.'),
  SSE_LEASE_TTL_MS: positiveInt(60_000, 3_600_000, "Lifetime of a stream's lease without its replica's renewal (renewed every third of it): a crashed replica's streams stop counting against their token's cap after this."),
  SSE_MAX_STREAMS: positiveInt(1000, 100_000, 'Event streams (SSE) one API replica holds open in all (1,000 idle streams keep the API within its 120 MB budget: BENCHMARKS.md); more is a 503 with Retry-After.'),
  SSE_RESYNC_MS: positiveInt(
    5000,
    3_600_000,
    'Event streams are woken by the change signal (the change file locally, the AZURE_EVENTS_POLL_MS poll in Azure); each followed deployment or org is also re-read this often without one, in case a file-watch signal was missed.',
  ),
  RETENTION_DAYS: positiveInt(7, 3650, 'POST /status/cleanup removes finished deployments older than this by default.'),
};

export const ApiEnvSchema = Type.Object(apiEnv);
export type ApiEnv = Static<TObject<typeof apiEnv>>;

export function loadApiEnv(env: Record<string, string | undefined>): ApiEnv {
  return parseEnv(ApiEnvSchema, env);
}
