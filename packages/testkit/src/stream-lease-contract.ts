import type { StreamLeaseStore } from '@zepid/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

export interface StreamLeaseHarness {
  leases: StreamLeaseStore;
  dispose(): Promise<void>;
}

const unique = (prefix: string) => `${prefix}_${Math.random().toString(36).slice(2, 10)}`;

/**
 * What every stream lease store must do (issue 13: the per-token stream cap across API replicas):
 * the count and the new lease in one atomic step, expired leases not counted, renewals and releases.
 * Time is passed in, so expiry is tested without waiting.
 */
export function streamLeaseContract(name: string, make: () => Promise<StreamLeaseHarness>): void {
  describe(`StreamLeaseStore contract: ${name}`, () => {
    let harness: StreamLeaseHarness;
    beforeAll(async () => {
      harness = await make();
    }, 60_000);
    afterAll(async () => {
      await harness.dispose();
    });
    const t0 = new Date('2026-12-06T12:00:00.000Z');
    const at = (ms: number) => new Date(t0.getTime() + ms);

    it('grants up to the limit per token, then null; other tokens and other orgs are counted apart', async () => {
      const { leases } = harness;
      const [org, key] = [unique('org'), unique('key')];
      const first = await leases.acquire(org, key, 2, 60_000, t0);
      const second = await leases.acquire(org, key, 2, 60_000, t0);
      expect([typeof first, typeof second]).toEqual(['string', 'string']);
      expect(first).not.toBe(second);
      expect(await leases.acquire(org, key, 2, 60_000, t0)).toBeNull();
      expect(await leases.acquire(org, unique('key'), 2, 60_000, t0)).toEqual(expect.any(String));
      expect(await leases.acquire(unique('org'), key, 2, 60_000, t0)).toEqual(expect.any(String));
    });

    it('a released lease frees its place (twice is fine)', async () => {
      const { leases } = harness;
      const [org, key] = [unique('org'), unique('key')];
      const id = await leases.acquire(org, key, 1, 60_000, t0);
      expect(await leases.acquire(org, key, 1, 60_000, t0)).toBeNull();
      await leases.release(org, key, id ?? '');
      await leases.release(org, key, id ?? '');
      expect(await leases.acquire(org, key, 1, 60_000, t0)).toEqual(expect.any(String));
    });

    it('an expired lease (its holder crashed) stops counting; a renewed one keeps counting until its new expiry', async () => {
      const { leases } = harness;
      const [org, key] = [unique('org'), unique('key')];
      const renewed = await leases.acquire(org, key, 2, 1000, t0);
      await leases.acquire(org, key, 2, 1000, t0); // never renewed: its holder is gone
      expect(await leases.acquire(org, key, 2, 1000, at(500))).toBeNull();
      await leases.renew(org, key, [renewed ?? ''], 1000, at(900));
      // At 1.5 s the unrenewed one has expired, the renewed one (until 1.9 s) still counts.
      const third = await leases.acquire(org, key, 2, 1000, at(1500));
      expect(third).toEqual(expect.any(String));
      expect(await leases.acquire(org, key, 2, 1000, at(1500))).toBeNull();
      // At 2 s the renewed one has expired too: one place is free again (the third lease holds the other, until 2.5 s).
      expect(await leases.acquire(org, key, 2, 1000, at(2000))).toEqual(expect.any(String));
      expect(await leases.acquire(org, key, 2, 1000, at(2000))).toBeNull();
    });

    it('concurrent acquires never exceed the limit', async () => {
      const { leases } = harness;
      const [org, key] = [unique('org'), unique('key')];
      const granted = await Promise.all(Array.from({ length: 8 }, () => leases.acquire(org, key, 3, 60_000, t0)));
      expect(granted.filter((id) => id !== null)).toHaveLength(3);
      expect(new Set(granted.filter((id) => id !== null)).size).toBe(3);
    });
  });
}
