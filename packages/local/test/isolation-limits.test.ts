import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Isolation } from '../src/index.ts';
import { resolveIsolation, spawnGroup, SqliteDatabase, TenantIds } from '../src/index.ts';
import { sandboxEnv } from '../src/builder/sandbox-env.ts';

const isRoot = process.getuid?.() === 0;

/** Runs `command` as the tenant of one app; its exit code and output lines. */
async function runAs(isolation: Isolation, command: string, env: Record<string, string> = { PATH: '/usr/bin:/bin' }): Promise<{ code: number | null; lines: string[] }> {
  const tenant = await isolation.tenant({ orgId: 'org', projectId: 'limits', appName: 'limits-000000-development' });
  const lines: string[] = [];
  const group = spawnGroup(command, { cwd: tmpdir(), env, wrap: tenant.wrap, onLine: (line) => lines.push(line) });
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

  it('WebAssembly works under the default LOCAL_LIMIT_MEMORY_MB in the sandbox environment (bundlers and yarn 4 use several memories)', async () => {
    // As the user running the tests (isolation none): the test's own Node is reachable; RLIMIT_AS applies all the same.
    const limited = resolveIsolation('none', { ids: null, limits: { memoryMb: 16384, processes: 64, openFiles: 1024 } });
    const script = `${JSON.stringify(process.execPath)} -e 'const m = []; for (let i = 0; i < 4; i += 1) m.push(new WebAssembly.Memory({ initial: 1 })); console.log("four memories")'`;
    const env = sandboxEnv({ home: tmpdir(), npmCache: join(dir, 'npm'), nodeBin: '/usr/bin', variables: { NODE_OPTIONS: '--max-old-space-size=512' } });
    expect(env.NODE_OPTIONS).toBe('--disable-wasm-trap-handler --max-old-space-size=512');
    expect((await runAs(limited, script, env)).lines).toContain('four memories');
    // Without the flag, the same command fails under the same limit: what Astro and Nuxt builds hit.
    const without = await runAs(limited, script, { PATH: '/usr/bin:/bin' });
    expect(without.code).not.toBe(0);
    expect(without.lines.join('\n')).toMatch(/WebAssembly\.Memory\(\): could not allocate memory/);
  });
});
