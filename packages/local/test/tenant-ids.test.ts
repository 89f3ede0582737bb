import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseIdRange, SqliteDatabase, TenantIds } from '../src/index.ts';

describe('tenant ids (uid isolation)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-ids-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('gives each key its own id from the range, the same one after a restart, and reuses a released one', () => {
    const path = join(dir, 'zepid.db');
    const ids = new TenantIds(new SqliteDatabase(path), { first: 5000, last: 5002 });
    const a = ids.idOf('app\0orgA\0web-1a2b3c-production');
    const b = ids.idOf('app\0orgB\0web-4d5e6f-production');
    const project = ids.idOf('project\0orgA\0web');
    expect(new Set([a, b, project]).size).toBe(3);
    expect([a, b, project].every((id) => id >= 5000 && id <= 5002)).toBe(true);
    expect(ids.idOf('app\0orgA\0web-1a2b3c-production')).toBe(a);
    expect(() => ids.idOf('app\0orgC\0api-000000-production')).toThrow(/LOCAL_UID_RANGE \(5000-5002\)/);
    ids.close();

    const again = new TenantIds(new SqliteDatabase(path), { first: 5000, last: 5002 });
    expect(again.idOf('app\0orgB\0web-4d5e6f-production')).toBe(b);
    again.release('app\0orgB\0web-4d5e6f-production');
    expect(again.idOf('app\0orgC\0api-000000-production')).toBe(b);
    again.close();
  });

  it('refuses ranges that would hand out root or (uid_t)-1', () => {
    expect(parseIdRange('1000000000-1000099999')).toEqual({ first: 1_000_000_000, last: 1_000_099_999 });
    expect(() => parseIdRange('0-10')).toThrow(/invalid id range/);
    expect(() => parseIdRange('10-4294967295')).toThrow(/invalid id range/);
    expect(() => parseIdRange('20-10')).toThrow(/invalid id range/);
  });
});
