import type { DeploymentRecord } from '../src/index.ts';
import { appName, newDeploymentId, newDeploymentRecord } from '../src/index.ts';

export function sampleRecord(overrides: Partial<DeploymentRecord> = {}): DeploymentRecord {
  const id = newDeploymentId();
  const base = newDeploymentRecord(
    {
      id,
      orgId: 'org_1',
      projectId: 'proj_1',
      userId: 'user_1',
      projectName: null,
      environment: 'development',
      appName: appName('org_1', 'proj_1', 'development'),
      spec: {
        customDomain: null,
        containerSize: null,
        envVariableNames: [],
        buildCommand: null,
        startCommand: null,
        port: null,
        historyMessageCount: 0,
      },
      source: { digest: 'sha256:00', fileCount: 1, bytes: 10, storedFiles: 1, storedBytes: 10 },
      idempotency: null,
    },
    new Date('2026-01-01T00:00:00Z'),
  );
  return { ...base, etag: 'e1', ...overrides };
}
