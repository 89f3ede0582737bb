/**
 * Static sites, in one run: (1) memory of 10 small sites served by the local router (what the worker
 * gains) against the same 10 sites as one Node server process each (how local mode served them
 * before: a minimal node:http static server per site); (2) a fingerprinted asset (gzip, keep-alive,
 * 10 connections) through the router against Debian's nginx with the generated image's
 * configuration on the same files. Compare within one run, not across runs.
 *
 *   node scripts/bench/static-sites.ts          (needs nginx + libnginx-mod-http-brotli-static + brotli for part 2)
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { LocalRouter } from '../../packages/local/src/runtime/router.ts';
import { StaticSite } from '../../packages/local/src/runtime/static-site.ts';
import { nginxAvailable, startNginx } from '../../test/static-serving/site.ts';
import { freePort } from '../../test/e2e/support.ts';

const SITES = 10;
const dir = mkdtempSync(join(tmpdir(), 'zepid-bench-static-'));
chmodSync(dir, 0o755);

const asset = (i: number) => `/assets/index-B9Ndfh${i}h.js`;
for (let i = 0; i < SITES; i += 1) {
  mkdirSync(join(dir, `site${i}`, 'assets'), { recursive: true });
  writeFileSync(join(dir, `site${i}`, 'index.html'), `<!doctype html><script type="module" src="${asset(i)}"></script><div id="root"></div>`);
  // About the size of a small Vite bundle.
  writeFileSync(join(dir, `site${i}`, asset(i).slice(1)), `${'export function f(a, b) { return a + b; }\n'.repeat(3500)}// ${i}\n`);
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
const get = (port: number, path: string, host: string) =>
  new Promise<number>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host, 'accept-encoding': 'br, gzip' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });

/** The per-site process local mode ran before: a minimal node:http file server (no compression). */
const PROCESS_SERVER = `
const { createServer } = require('node:http'); const { createReadStream } = require('node:fs'); const { join } = require('node:path');
createServer((q, r) => createReadStream(join(process.argv[1], q.url === '/' ? 'index.html' : q.url)).on('error', () => r.writeHead(404).end()).pipe(r)).listen(Number(process.env.PORT), '127.0.0.1');`;

const results: Record<string, unknown> = {};
const children: ChildProcess[] = [];
const router = new LocalRouter({ host: '127.0.0.1', port: 0 });
try {
  const ports: number[] = [];
  for (let i = 0; i < SITES; i += 1) {
    const port = await freePort();
    ports.push(port);
    children.push(spawn(process.execPath, ['-e', PROCESS_SERVER, join(dir, `site${i}`)], { env: { PORT: String(port) }, stdio: 'ignore' }));
  }
  for (let i = 0; i < SITES; i += 1) {
    for (let tries = 0; ; tries += 1) {
      try {
        await get(ports[i] ?? 0, asset(i), 'x');
        break;
      } catch (error) {
        if (tries > 300) throw error;
        await sleep(100);
      }
    }
  }
  const processes = children.reduce((sum, child) => sum + rssMb(child.pid ?? 0), 0);
  for (const child of children) child.kill('SIGTERM');

  globalThis.gc?.();
  const before = rssMb(process.pid);
  await router.start();
  for (let i = 0; i < SITES; i += 1) router.set(`site${i}`, { site: await StaticSite.open(join(dir, `site${i}`), join(dir, `cache${i}`)) });
  for (let i = 0; i < SITES; i += 1) await get(router.listeningPort, asset(i), `site${i}.localhost`);
  globalThis.gc?.();
  results.memory = { sites: SITES, asProcessesMb: Math.round(processes), perProcessMb: Math.round(processes / SITES), routerAddsMb: Math.round((rssMb(process.pid) - before) * 10) / 10 };

  if (nginxAvailable()) {
    const nginx = await startNginx(join(dir, 'site0'), join(dir, 'nginx'));
    const run = (port: number, host: string) =>
      new Promise<{ requestsPerSecond: number; p99Ms: number }>((resolve, reject) => {
        autocannon({ url: `http://127.0.0.1:${port}${asset(0)}`, connections: 10, duration: 5, headers: { host, 'accept-encoding': 'gzip' } }, (error, result) => {
          if (error !== null && error !== undefined) reject(error instanceof Error ? error : new Error(String(error)));
          else resolve({ requestsPerSecond: Math.round(result.requests.average), p99Ms: result.latency.p99 });
        });
      });
    try {
      const viaRouter = await run(router.listeningPort, 'site0.localhost');
      const viaNginx = await run(nginx.port, 'x');
      results.asset = { router: viaRouter, nginx: viaNginx, routerToNginx: Math.round((viaRouter.requestsPerSecond / viaNginx.requestsPerSecond) * 100) / 100 };
    } finally {
      await nginx.stop();
    }
  } else {
    results.asset = 'skipped: nginx, libnginx-mod-http-brotli-static or brotli is not installed';
  }
} finally {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  await router.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(results, null, 2));
