import type { AppRecord, DeploymentRecord, Environment, WebhookEndpoint } from '@zepid/core';
import { appName, newDeploymentId, newDeploymentRecord, newPrefixedId } from '@zepid/core';

/** A fresh queued deployment record for tests; `overrides` win. */
export function makeRecord(
  overrides: Partial<Omit<DeploymentRecord, 'etag'>> & { orgId?: string; projectId?: string; environment?: Environment } = {},
  createdAt = new Date(),
): DeploymentRecord {
  const orgId = overrides.orgId ?? 'org_test';
  const projectId = overrides.projectId ?? 'proj_test';
  const environment = overrides.environment ?? 'development';
  const record = newDeploymentRecord(
    {
      id: newDeploymentId(),
      orgId,
      projectId,
      userId: 'user_test',
      projectName: null,
      environment,
      appName: appName(orgId, projectId, environment),
      spec: {
        customDomain: null,
        containerSize: null,
        envVariableNames: [],
        buildCommand: null,
        startCommand: null,
        port: null,
        historyMessageCount: 0,
      },
      source: { digest: 'sha256:test', fileCount: 1, bytes: 1, storedFiles: 1, storedBytes: 1 },
      idempotency: null,
    },
    createdAt,
  );
  return { ...record, ...overrides };
}

/** A fresh app record to create (etag '' = create) for tests; `overrides` win. */
export function makeAppRecord(
  overrides: Partial<AppRecord> & { orgId?: string; projectId?: string; environment?: Environment } = {},
  at = new Date(),
): AppRecord {
  const orgId = overrides.orgId ?? 'org_test';
  const projectId = overrides.projectId ?? 'proj_test';
  const environment = overrides.environment ?? 'development';
  return {
    orgId,
    projectId,
    environment,
    appName: appName(orgId, projectId, environment),
    env: [],
    envUpdatedAt: null,
    deletingSince: null,
    createdAt: at.toISOString(),
    updatedAt: at.toISOString(),
    etag: '',
    ...overrides,
  };
}

/** A webhook endpoint of the org for tests (every event, every project, enabled); `overrides` win. */
export function makeWebhook(orgId: string, overrides: Partial<WebhookEndpoint> = {}): WebhookEndpoint {
  const at = new Date().toISOString();
  return {
    id: newPrefixedId('wh_'),
    orgId,
    url: 'https://hooks.example.com/zepid',
    events: null,
    projectId: null,
    description: null,
    enabled: true,
    disabledReason: null,
    failingSince: null,
    previousSecretExpiresAt: null,
    createdAt: at,
    updatedAt: at,
    etag: '',
    ...overrides,
  };
}
