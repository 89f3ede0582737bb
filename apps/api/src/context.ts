import type { ApiAdapters, Clock, WebhookAddressPolicy } from '@zepid/core';
import type { TokenVerifier } from './auth.ts';
import type { AppService } from './apps.ts';
import type { DeploymentService } from './deployments.ts';

/** Everything the routes need, built once by the process (server.ts) or a test. */
export interface AppContext {
  adapters: ApiAdapters;
  service: DeploymentService;
  /** App operations (issue 12); buildApp makes one from the adapters and `service` when absent. */
  apps: AppService;
  tokens: TokenVerifier;
  mode: 'local' | 'azure';
  startedAt: number;
  estimatedDuration: string;
  retentionDays: number;
  rateLimitPerMinute: number;
  /** A worker whose last heartbeat is older than this counts as gone. */
  workerStaleMs: number;
  clock: Clock;
  /** Open event streams (SSE) one token may hold across all API replicas; default 20. */
  streamsPerToken?: number;
  /** Open event streams on this process in all (SSE_MAX_STREAMS); default 1,000. */
  maxStreams?: number;
  /** Lifetime of a stream lease without renewal (SSE_LEASE_TTL_MS); default 60 s. */
  streamLeaseTtlMs?: number;
  /** Longest a stream's watch goes without reading the store when no change signal came (SSE_RESYNC_MS); default 5 s. */
  streamResyncMs?: number;
  /**
   * Compile every route's validators and response serializers while the app is built, as Fastify
   * does by default, instead of on each route's first use (the API's own way, for memory): the
   * test that all of them compile sets it.
   */
  compileSchemasAtStart?: boolean;
  /** Idle time after which a stream gets a comment line; 15 s (tests shorten it). */
  sseHeartbeatMs?: number;
  /** Where webhooks may point; default: private networks allowed in local mode, https required in azure mode. */
  webhookPolicy?: WebhookAddressPolicy;
}
