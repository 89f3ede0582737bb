/**
 * Starting and stopping the peers of `npm run bench` (issue 16): the SQLite and BullMQ peer
 * services (Node, same flags as ours less our V8 tuning), a Redis for BullMQ and an nginx for the
 * static site, both Debian's, on loopback and free ports, in a temporary directory. Redis and nginx
 * are optional: when one is not installed its figures are skipped with a notice saying how to
 * install it (`apt-get install redis-server nginx strace`; .ci/run does).
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, openSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, startService } from '../support.ts';
import type { Service } from '../support.ts';

/** How peers run: loaded like our services (stripped ahead of time), but with Node's default heap settings. */
export const PEER_NODE_FLAGS: readonly string[] = ['--import=./scripts/precompiled-loader.mjs'];

/** A program on PATH or in the sbin directories (nginx lives in /usr/sbin); null when absent. */
export function findProgram(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return null;
}

export interface External {
  readonly port: number;
  readonly child: ChildProcess;
  stop(): Promise<void>;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  if ((await Promise.race([exited, sleep(10_000, 'timeout')])) === 'timeout') {
    child.kill('SIGKILL');
    await exited;
  }
}

function startExternal(program: string, args: string[], logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a');
  const child = spawn(program, args, { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  return child;
}

/** Waits until something accepts connections on the port (or the process exits). */
async function waitPort(child: ChildProcess, port: number, what: string, logFile: string): Promise<void> {
  const { connect } = await import('node:net');
  for (let i = 0; i < 200; i += 1) {
    if (child.exitCode !== null) break;
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    await sleep(50);
  }
  throw new Error(`${what} did not start on port ${port}:\n${readFileSync(logFile, 'utf8').slice(-2000)}`);
}

/** Debian's redis-server on loopback, AOF `everysec` (no RDB snapshots); null when not installed. */
export async function startRedis(dir: string): Promise<External | null> {
  const program = findProgram('redis-server');
  if (program === null) return null;
  const port = await freePort();
  const logFile = join(dir, 'redis.log');
  const child = startExternal(
    program,
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--daemonize', 'no', '--protected-mode', 'yes'],
    logFile,
  );
  await waitPort(child, port, 'redis-server', logFile);
  return { port, child, stop: () => stopChild(child) };
}

/**
 * Debian's nginx serving `root` on loopback as its packaged configuration does (worker_processes
 * auto, sendfile, keep-alive, access log on), in the foreground; null when not installed.
 */
export async function startNginx(root: string, dir: string): Promise<External | null> {
  const program = findProgram('nginx');
  if (program === null) return null;
  const port = await freePort();
  const config = join(dir, 'nginx.conf');
  const mimeTypes = '/etc/nginx/mime.types';
  writeFileSync(
    config,
    `daemon off;
worker_processes auto;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'nginx-error.log')} warn;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 1024; }
http {
  ${(() => {
    try {
      accessSync(mimeTypes);
      return `include ${mimeTypes};`;
    } catch {
      return '';
    }
  })()}
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  access_log ${join(dir, 'nginx-access.log')};
  client_body_temp_path ${join(dir, 'nginx-body')};
  proxy_temp_path ${join(dir, 'nginx-proxy')};
  fastcgi_temp_path ${join(dir, 'nginx-fastcgi')};
  uwsgi_temp_path ${join(dir, 'nginx-uwsgi')};
  scgi_temp_path ${join(dir, 'nginx-scgi')};
  server {
    listen 127.0.0.1:${port};
    root ${root};
    index index.html;
  }
}
`,
  );
  const logFile = join(dir, 'nginx.log');
  const child = startExternal(program, ['-c', config, '-p', dir, '-e', join(dir, 'nginx-error.log')], logFile);
  await waitPort(child, port, 'nginx', logFile);
  return { port, child, stop: () => stopChild(child) };
}

export async function startSqlitePeer(dir: string, env: { TOKENS: string; LOG_LEVEL: string; SEED_STATUS?: string }): Promise<{ service: Service; port: number; db: string }> {
  const port = await freePort();
  const db = join(dir, 'sqlite-peer.db');
  const service = startService('sqlite-peer', 'scripts/bench/peers/sqlite-peer.ts', { ...env, PORT: String(port), DB: db }, PEER_NODE_FLAGS, dir);
  return { service, port, db };
}

export async function startBullmqPeer(dir: string, redisPort: number, env: { TOKENS: string; LOG_LEVEL: string }): Promise<{ service: Service; port: number }> {
  const port = await freePort();
  const service = startService('bullmq-peer', 'scripts/bench/peers/bullmq-peer.ts', { ...env, PORT: String(port), REDIS_PORT: String(redisPort) }, PEER_NODE_FLAGS, dir);
  return { service, port };
}

/**
 * Reads and writes of the SQLite files (database and WAL; the shared-memory index is mapped, not
 * written through calls) made by process `pid` and its threads while `work` runs, counted with
 * strace. Null when strace is not installed or cannot attach (ptrace not permitted).
 */
export async function countDatabaseIo(pid: number, databasePath: string, dir: string, work: () => Promise<void>): Promise<{ writes: number; reads: number } | null> {
  const strace = findProgram('strace');
  if (strace === null) return null;
  const out = join(dir, `strace-${pid}-${Date.now()}.txt`);
  const child = spawn(strace, ['-f', '-qq', '-y', '-e', 'trace=write,pwrite64,writev,pwritev,read,pread64,readv,preadv', '-p', String(pid), '-o', out], { stdio: 'ignore' });
  // strace attaches asynchronously: give it a moment before the work starts.
  await sleep(500);
  if (child.exitCode !== null) return null;
  try {
    await work();
  } finally {
    child.kill('SIGINT');
    await new Promise((resolve) => child.once('exit', resolve));
  }
  let writes = 0;
  let reads = 0;
  const file = new RegExp(`<${databasePath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(-wal)?>`);
  for (const line of readFileSync(out, 'utf8').split('\n')) {
    if (!file.test(line)) continue;
    if (/\b(p?write(64|v)?|pwritev)\(/.test(line)) writes += 1;
    else if (/\b(p?read(64|v)?|preadv)\(/.test(line)) reads += 1;
  }
  return { writes, reads };
}

/** Whether strace can attach here (it cannot in containers without ptrace). */
export function straceUsable(): boolean {
  const strace = findProgram('strace');
  if (strace === null) return false;
  return spawnSync(strace, ['-qq', '-e', 'trace=none', 'true'], { stdio: 'ignore' }).status === 0;
}
