/**
 * A static file through the local router against Debian's nginx (the bench's static peer, issue 16),
 * focused: each router runs alone in its own process (static-router-host.ts) so its CPU time per
 * request is read from /proc beside req/s; rounds alternate the sides and rotate their order (the
 * machine is shared and noisy). Bodies are compared first: same bytes or no figure.
 *
 *   node scripts/bench/ab-static.ts
 *   AB_ROUTERS='new=packages/local/src/runtime,nocache=packages/local/src/runtime@0,old=/path/to/copy' AB_ROUNDS=6 AB_SECONDS=5 node scripts/bench/ab-static.ts
 *
 * A router is `name=<dir with router.ts and static-site.ts>[@<LOCAL_STATIC_CACHE_MB>]`.
 *
 * AB_SITE (default examples/static-site), AB_PATH (/index.html), AB_ACCEPT_ENCODING (none),
 * AB_CONNECTIONS (50).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';
import { startNginx } from './peers/harness.ts';
import { quantile, root } from './support.ts';

const site = process.env.AB_SITE ?? join(root, 'examples', 'static-site');
const path = process.env.AB_PATH ?? '/index.html';
const rounds = Number(process.env.AB_ROUNDS ?? 6);
const seconds = Number(process.env.AB_SECONDS ?? 5);
const connections = Number(process.env.AB_CONNECTIONS ?? 50);
const headers: Record<string, string> = process.env.AB_ACCEPT_ENCODING === undefined ? {} : { 'accept-encoding': process.env.AB_ACCEPT_ENCODING };
const routers = (process.env.AB_ROUTERS ?? 'router=packages/local/src/runtime').split(',').map((entry) => {
  const [name = '', spec = ''] = entry.split('=');
  const [dir = '', cacheMb] = spec.split('@');
  return { name, dir, cacheMb };
});

/** utime + stime of a process and of its children threads, in clock ticks (100 per second on Linux). */
function cpuTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  return Number(fields[11]) + Number(fields[12]);
}
/** nginx: the master and its workers (children of the master). */
function groupTicks(pid: number): number {
  let total = cpuTicks(pid);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const fields = readFileSync(`/proc/${entry}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
      if (Number(fields[1]) === pid) total += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone
    }
  }
  return total;
}

const dir = mkdtempSync(join(tmpdir(), 'zepid-ab-static-'));
const children: ChildProcess[] = [];
const sides: { name: string; url: string; ticks: () => number }[] = [];
const nginx = await startNginx(site, dir);
try {
  if (nginx === null) throw new Error('nginx is not installed (apt-get install nginx)');
  sides.push({ name: 'nginx', url: `http://127.0.0.1:${nginx.port}${path}`, ticks: () => groupTicks(nginx.child.pid ?? 0) });
  for (const router of routers) {
    const child = spawn(process.execPath, ['--import=./scripts/precompiled-loader.mjs', 'scripts/bench/static-router-host.ts', site, join(dir, `cache-${router.name}`), router.dir], {
      cwd: root,
      env: { ...process.env, ...(router.cacheMb === undefined ? {} : { LOCAL_STATIC_CACHE_MB: router.cacheMb }) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`router ${router.name} exited (${code})`)));
    });
    const { port } = JSON.parse(line) as { port: number };
    sides.push({ name: router.name, url: `http://127.0.0.1:${port}/apps/site${path}`, ticks: () => cpuTicks(child.pid ?? 0) });
  }
  const bodies = await Promise.all(sides.map(async (side) => Buffer.from(await (await fetch(side.url, { headers })).arrayBuffer())));
  for (const [index, body] of bodies.entries()) {
    if (!body.equals(bodies[0]!)) throw new Error(`${sides[index]?.name} serves other bytes than nginx (${body.length} vs ${bodies[0]?.length})`);
  }
  const results = new Map(sides.map((side) => [side.name, [] as { rps: number; cpuUsPerRequest: number }[]]));
  for (let round = 0; round < rounds; round += 1) {
    const order = sides.map((_, index) => sides[(index + round) % sides.length]!);
    for (const side of order) {
      const before = side.ticks();
      const result = await autocannon({ url: side.url, headers, connections, duration: seconds });
      const ticks = side.ticks() - before;
      if (result.non2xx + result.errors > 0) throw new Error(`${side.name}: ${result.non2xx} non-2xx, ${result.errors} errors`);
      const requests = result.requests.total;
      results.get(side.name)!.push({ rps: requests / seconds, cpuUsPerRequest: (ticks * 10_000) / requests });
    }
    process.stderr.write(`round ${round + 1}: ${sides.map((side) => `${side.name} ${Math.round(results.get(side.name)!.at(-1)!.rps)} req/s`).join(', ')}\n`);
  }
  const nginxRounds = results.get('nginx')!;
  const summary = sides.map((side) => {
    const own = results.get(side.name)!;
    return {
      side: side.name,
      rpsMedian: Math.round(quantile(own.map((r) => r.rps), 0.5)),
      cpuUsPerRequestMedian: Number(quantile(own.map((r) => r.cpuUsPerRequest), 0.5).toFixed(1)),
      ratioToNginxMedian: Number(quantile(own.map((r, i) => r.rps / nginxRounds[i]!.rps), 0.5).toFixed(3)),
      rounds: own.map((r) => ({ rps: Math.round(r.rps), cpuUs: Number(r.cpuUsPerRequest.toFixed(1)) })),
    };
  });
  console.log(JSON.stringify({ path, bytes: bodies[0]?.length, headers, connections, seconds, rounds, loadAverage: readFileSync('/proc/loadavg', 'utf8').trim(), summary }));
} finally {
  for (const child of children) child.kill('SIGTERM');
  await nginx?.stop();
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}
