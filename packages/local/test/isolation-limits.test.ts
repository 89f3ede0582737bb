import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Isolation } from '../src/index.ts';
import { resolveIsolation, spawnGroup, SqliteDatabase, TenantIds } from '../src/index.ts';

const isRoot = process.getuid?.() === 0;

/** Runs `command` as the tenant of one app; its exit code and output lines. */
async function runAs(isolation: Isolation, command: string): Promise<{ code: number | null; lines: string[] }> {
  const tenant = await isolation.tenant({ orgId: 'org', projectId: 'limits', appName: 'limits-000000-development' });
  const lines: string[] = [];
  const group = spawnGroup(command, { cwd: tmpdir(), env: { PATH: '/usr/bin:/bin' }, wrap: tenant.wrap, onLine: (line) => lines.push(line) });
  const exit = await group.exited;
  return { code: exit.code, lines };
}

describe('resource limits of local builds and apps', () => {
  let dir: string;
  let isolation: Isolation;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-limits-'));
    const ids = new TenantIds(new SqliteDatabase(join(dir, 'zepid.db')), { first: 1_000_090_000, last: 1_000_090_099 });
    // As root (CI) the limits come with a uid of the app's own; otherwise they apply to the user's own commands.
    isolation = resolveIsolation('auto', { ids, limits: { memoryMb: 4096, processes: 16, openFiles: 64 } });
  });

  afterAll(async () => {
    isolation.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('stops a command opening more files than LOCAL_LIMIT_OPEN_FILES, and the failure names the limit', async () => {
    // perl (Debian's perl-base, reachable by any uid) opens /dev/null 100 times and keeps every handle.
    const result = await runAs(isolation, `perl -e 'my @f; for (1..100) { open(my $h, "<", "/dev/null") or die "open: $!\\n"; push @f, $h } print "opened all\\n"'`);
    expect(result.lines).not.toContain('opened all');
    expect(result.code).not.toBe(0);
    expect(isolation.limitHit(result.lines)).toContain('LOCAL_LIMIT_OPEN_FILES=64');
  });

  it.runIf(isRoot)('stops an app forking past LOCAL_LIMIT_PROCESSES (per uid, so only with uid isolation), and the failure names the limit', async () => {
    expect(isolation.mode).toBe('uid');
    const result = await runAs(isolation, 'for i in $(seq 1 40); do sleep 1 & done; echo "forked all"; kill $(jobs -p) 2>/dev/null; wait');
    expect(result.lines).not.toContain('forked all');
    expect(isolation.limitHit(result.lines)).toContain('LOCAL_LIMIT_PROCESSES=16');
  });
});
