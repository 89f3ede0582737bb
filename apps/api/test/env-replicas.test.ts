import { describe, expect, it } from 'vitest';
import { appName } from '@zepid/core';
import type { Harness } from './harness.ts';
import { auth, createHarness, staticBody } from './harness.ts';

/**
 * Issue 12: an app's env values are changed read-modify-write (the whole set is stored again), so two
 * API replicas changing the same app at the same instant must not lose one change. Two Fastify apps on
 * one data dir stand for two replicas: each has its own SQLite connection, secret store and in-process
 * state; only the store (the app record's lease, taken by conditional writes) is shared.
 */
describe('env changes from two API replicas', () => {
  const ref = { orgId: 'org_456', projectId: 'twin', environment: 'development' as const, appName: appName('org_456', 'twin', 'development') };
  const put = (h: Harness, name: string) =>
    h.app.inject({ method: 'PUT', url: `/projects/twin/env/${name}`, headers: auth('org_456'), payload: { value: `value of ${name}`, apply: 'none' } });
  const patch = (h: Harness, set: Record<string, string | null>) =>
    h.app.inject({ method: 'PATCH', url: '/projects/twin/env', headers: auth('org_456'), payload: { set, apply: 'none' } });
  const remove = (h: Harness, name: string) => h.app.inject({ method: 'DELETE', url: `/projects/twin/env/${name}?apply=none`, headers: auth('org_456') });

  it('two replicas hammering different names of one app at once: every change is kept', async () => {
    const one = await createHarness();
    const two = await createHarness({ dataDir: one.dataDir });
    try {
      const deployed = await one.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ projectId: 'twin', envVariables: { DOOMED: 'x', KEPT: 'k' } }) });
      expect(deployed.statusCode, deployed.body).toBe(202);
      const namesOne = Array.from({ length: 12 }, (_, index) => `ONE_${index}`);
      const namesTwo = Array.from({ length: 12 }, (_, index) => `TWO_${index}`);
      const answers = await Promise.all([
        ...namesOne.map((name) => put(one, name)),
        ...namesTwo.map((name) => put(two, name)),
        patch(two, { PATCHED_A: 'a', PATCHED_B: 'b' }),
        remove(one, 'DOOMED'),
      ]);
      for (const answer of answers) expect(answer.statusCode, answer.body).toBe(200);

      const expected: Record<string, string> = { KEPT: 'k', PATCHED_A: 'a', PATCHED_B: 'b' };
      for (const name of [...namesOne, ...namesTwo]) expected[name] = `value of ${name}`;
      expect(await one.adapters.secrets.getAppEnv(ref)).toEqual(expected);
      expect(await two.adapters.secrets.getAppEnv(ref)).toEqual(expected);
      const listed = (await two.app.inject({ url: '/projects/twin/env', headers: auth('org_456') })).json<{ variables: { name: string }[] }>();
      expect(listed.variables.map((variable) => variable.name)).toEqual(Object.keys(expected).sort());
      // The lease is given back: nothing is left holding the app's env.
      expect((await one.adapters.store.getApp('org_456', ref.appName))?.envLock ?? null).toBeNull();
    } finally {
      await two.close();
      await one.close();
    }
  });

  it('a lease its replica never gave back (it died) is taken over once its time is up', async () => {
    const h = await createHarness();
    try {
      const deployed = await h.app.inject({ method: 'POST', url: '/deploy', headers: auth('org_456'), payload: staticBody({ projectId: 'twin', envVariables: { KEPT: 'k' } }) });
      expect(deployed.statusCode, deployed.body).toBe(202);
      const record = await h.adapters.store.getApp('org_456', ref.appName);
      if (record === null) throw new Error('no app record');
      await h.adapters.store.putApp({ ...record, envLock: { owner: 'lease_dead_replica', until: new Date(Date.now() - 1).toISOString() } });
      const answer = await put(h, 'AFTER');
      expect(answer.statusCode, answer.body).toBe(200);
      expect(await h.adapters.secrets.getAppEnv(ref)).toEqual({ KEPT: 'k', AFTER: 'value of AFTER' });
      expect((await h.adapters.store.getApp('org_456', ref.appName))?.envLock ?? null).toBeNull();
    } finally {
      await h.close();
    }
  });
});
