import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { pino } from 'pino';
import type { ApiAdapters, Clock, DeploymentRecord, WebhookAddressPolicy } from '@zepid/core';
import { apply, STEPS } from '@zepid/core';
import { createLocalAdapters } from '@zepid/local';
import { buildApp } from '../src/app.ts';
import { TokenRegistry } from '../src/auth.ts';
import { DeploymentService } from '../src/deployments.ts';
import { closeAll, startAll } from '../src/wiring.ts';

export const TOKENS = {
  org_456: 'tok-org456-0123456789abcdef',
  org_other: 'tok-other-0123456789abcdef',
  local: 'tok-local-0123456789abcdef',
} as const;

export const auth = (org: keyof typeof TOKENS) => ({ authorization: `Bearer ${TOKENS[org]}` });

export interface Harness {
  app: FastifyInstance;
  adapters: ApiAdapters;
  dataDir: string;
  /** Moves the API's clock (cleanup cutoffs). */
  advance(ms: number): void;
  /** Every artifact file, relative to the artifacts directory: `manifests/<org key>/<id>.json.gz`, `objects/<org key>/<sha256>`, … */
  artifactFiles(): Promise<string[]>;
  close(): Promise<void>;
}

export async function createHarness(
  options: {
    maxActivePerOrg?: number;
    rateLimitPerMinute?: number;
    logger?: Logger;
    streamsPerToken?: number;
    maxStreams?: number;
    sseHeartbeatMs?: number;
    streamResyncMs?: number;
    compileSchemasAtStart?: boolean;
    /** Called with the built app before `ready()` (to add a route of the test's own). */
    beforeReady?: (app: FastifyInstance) => void;
    webhookPolicy?: WebhookAddressPolicy;
    objectUploadWindowMs?: number;
    /** Another harness's data dir: a second API replica on the same database, artifacts and secrets (its `close` leaves the dir). */
    dataDir?: string;
  } = {},
): Promise<Harness> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'zepid-api-')));
  const logger = options.logger ?? pino({ level: 'silent' });
  const adapters = createLocalAdapters(dataDir, logger);
  await startAll(adapters);
  let offset = 0;
  const clock: Clock = () => new Date(Date.now() + offset);
  const tokens = TokenRegistry.fromSetting(Object.entries(TOKENS).map(([org, token]) => `${org}:${token}`).join(','));
  const service = new DeploymentService(adapters, { maxActivePerOrg: options.maxActivePerOrg ?? 50, objectUploadWindowMs: options.objectUploadWindowMs, clock, logger });
  const app = await buildApp(
    {
      adapters,
      service,
      tokens,
      mode: 'local',
      startedAt: Date.now(),
      estimatedDuration: 'under a minute',
      retentionDays: 7,
      rateLimitPerMinute: options.rateLimitPerMinute ?? 100_000,
      workerStaleMs: 30_000,
      clock,
      streamsPerToken: options.streamsPerToken,
      maxStreams: options.maxStreams,
      sseHeartbeatMs: options.sseHeartbeatMs,
      streamResyncMs: options.streamResyncMs,
      compileSchemasAtStart: options.compileSchemasAtStart,
      webhookPolicy: options.webhookPolicy,
    },
    logger,
  );
  options.beforeReady?.(app);
  try {
    await app.ready();
  } catch (error) {
    await app.close().catch(() => undefined);
    await closeAll(adapters);
    if (options.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
  return {
    app,
    adapters,
    dataDir,
    advance: (ms) => {
      offset += ms;
    },
    artifactFiles: async () => {
      const entries = await readdir(join(dataDir, 'artifacts'), { recursive: true, withFileTypes: true });
      return entries.filter((entry) => entry.isFile()).map((entry) => relative(join(dataDir, 'artifacts'), join(entry.parentPath, entry.name))).sort();
    },
    close: async () => {
      await app.close();
      await closeAll(adapters);
      if (options.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** The request example of the Deploy V3 design document (seed 003), exactly as written there, plus files. */
export const seedExample = {
  projectId: 'my-app',
  userId: 'user_123',
  organizationId: 'org_456',
  projectName: 'My Application',
  environment: 'production',
  customDomain: 'myapp.com',
  containerSize: {
    cpu: '1',
    memory: '2Gi',
  },
  envVariables: {
    DATABASE_URL: 'postgres://...',
    API_KEY: 'secret123',
  },
  buildCommand: 'npm run build',
  startCommand: 'npm start',
  files: [{ path: 'index.html', content: '<h1>hi</h1>' }],
};

export function staticBody(overrides: Record<string, unknown> = {}) {
  return { projectId: 'site', organizationId: 'org_456', userId: 'u1', files: [{ path: 'index.html', content: '<h1>hi</h1>' }], ...overrides };
}

/**
 * What the worker writes for a deployment that built (or, with `buildOutput.reusedFrom`, reused) an
 * image and went live at `at`: every step completed, the image, revision and URL recorded.
 */
export async function completeDeployment(
  adapters: ApiAdapters,
  orgId: string,
  id: string,
  at: Date,
  buildOutput: Record<string, string> = {},
): Promise<DeploymentRecord> {
  const stored = await adapters.store.get({ orgId, deploymentId: id });
  if (stored === null) throw new Error(`no record ${id}`);
  let record = apply(stored, { type: 'attempt_started' }, at);
  for (const step of STEPS) {
    record = apply(record, { type: 'step_started', step }, at);
    record = apply(record, { type: 'step_completed', step, output: step === 'build' ? { image: `img-${id}`, ...buildOutput } : {} }, at);
  }
  record = apply(record, { type: 'completed', result: { image: `img-${id}`, revision: `rev-${id}`, url: `http://${id}.localhost` } }, at);
  return adapters.store.replace(record);
}
