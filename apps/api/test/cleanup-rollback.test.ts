import { describe, expect, it } from 'vitest';
import { apply, STEPS } from '@zepid/core';
import { auth, createHarness, staticBody } from './harness.ts';

// Issue 12: retention of finished deployments never removes one a rollback still needs.
describe('POST /status/cleanup and rollback', () => {
  it('keeps a completed deployment whose image is still kept, removes one whose image retention removed', async () => {
    const cleanup = await createHarness();
    try {
      const complete = async (name: string, finishedAt: Date, imageRemovedAt?: string) => {
        const response = await cleanup.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ projectId: 'roll' }) });
        const id = response.json<{ deploymentId: string }>().deploymentId;
        let record = await cleanup.adapters.store.get({ orgId: 'org_456', deploymentId: id });
        if (record === null) throw new Error('missing');
        record = apply(record, { type: 'attempt_started' }, finishedAt);
        for (const step of STEPS) {
          record = apply(record, { type: 'step_started', step }, finishedAt);
          const output = step === 'build' ? { image: `img-${name}`, digest: null, reusedFrom: null, ...(imageRemovedAt === undefined ? {} : { imageRemovedAt }) } : {};
          record = apply(record, { type: 'step_completed', step, output }, finishedAt);
        }
        await cleanup.adapters.store.replace(apply(record, { type: 'completed', result: { image: `img-${name}`, revision: `app--${name}`, url: 'u' } }, finishedAt));
        return id;
      };
      const start = Date.now();
      const gone = await complete('v1', new Date(start), new Date(start + 5000).toISOString());
      const rollbackTarget = await complete('v2', new Date(start + 1000));
      const live = await complete('v3', new Date(start + 2000));

      cleanup.advance(8 * 86_400_000);
      const response = await cleanup.app.inject({ method: 'POST', url: '/status/cleanup', headers: auth('org_456') });
      expect(response.statusCode).toBe(200);
      const body = response.json<{ deploymentIds: string[]; kept: { deploymentId: string; reason: string }[] }>();
      expect(body.deploymentIds).toEqual([gone]);
      expect(body.kept).toEqual([
        { deploymentId: rollbackTarget, reason: 'its image is kept for rollback (KEEP_IMAGES_PER_APP)' },
        { deploymentId: live, reason: "serves the app's traffic" },
      ]);
    } finally {
      await cleanup.close();
    }
  });
});
