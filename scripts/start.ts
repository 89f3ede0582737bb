/**
 * `npm start`: runs the API and the worker side by side on the embedded defaults (or whatever the
 * environment configures), prefixes their output, and stops both — and so every app the worker
 * runs — whoever receives the signal:
 * - Ctrl-C in a terminal (SIGINT to the whole foreground group), `kill` of this process (SIGTERM,
 *   SIGINT, SIGHUP): the services are asked to stop, and this process exits once they have.
 * - `kill` of npm (even -9): npm passes a signal to `sh -c`, which dies without passing it on, or
 *   npm dies and the shell waits on us; either way an ancestor is gone: noticed within half a
 *   second, and the services are stopped as above.
 * - either service exiting: the other one is stopped too.
 * - this process killed with SIGKILL (it runs no code then): each service holds an IPC channel to
 *   it, which the kernel closes; the service then stops itself as on SIGTERM
 *   (scripts/exit-with-parent.mjs), and the worker stops its apps.
 * A service still running SERVICE_STOP_GRACE_MS after the request is killed. In production each
 * runs in its own container instead (see Dockerfile).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { SERVICE_NODE_FLAGS } from './node-flags.ts';
import { precompile } from './precompiled.mjs';

/** The worker gives running deployments SHUTDOWN_GRACE_MS (25 s by default) before it releases them. */
const SERVICE_STOP_GRACE_MS = 60_000;
const PARENT_CHECK_MS = 500;

const root = fileURLToPath(new URL('..', import.meta.url));
const apps = [
  { name: 'api', entry: 'apps/api/src/server.ts' },
  { name: 'worker', entry: 'apps/worker/src/main.ts' },
];

try {
  precompile({ root });
} catch (error) {
  // Only memory is at stake: the services strip their TypeScript themselves then.
  process.stderr.write(`[start] could not precompile the sources (${error instanceof Error ? error.message : String(error)}); the services strip them at run time\n`);
}

const children: ChildProcess[] = [];
let exiting = false;

function running(): ChildProcess[] {
  return children.filter((child) => child.exitCode === null && child.signalCode === null);
}

function shutdown(reason: string, code: number): void {
  if (exiting) return;
  exiting = true;
  process.exitCode = code;
  process.stderr.write(`[start] ${reason}: stopping the api and the worker\n`);
  for (const child of running()) child.kill('SIGTERM');
  const force = setTimeout(() => {
    for (const child of running()) {
      process.stderr.write(`[start] pid ${child.pid ?? '?'} still running after ${SERVICE_STOP_GRACE_MS / 1000} s; killing it\n`);
      child.kill('SIGKILL');
    }
  }, SERVICE_STOP_GRACE_MS);
  force.unref();
}

/** Parent pid and start time of `pid` from /proc (Linux); null elsewhere or when it is gone. */
function procStat(pid: number): { ppid: number; startTime: string } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command (field 2) may contain spaces: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(fields[1]), startTime: fields[19] ?? '' };
  } catch {
    return null;
  }
}

/**
 * Who must be alive for us to go on: our parent, and when npm started us (through `sh -c`), npm
 * too — killing npm leaves that shell waiting on us. Start times guard against a reused pid.
 */
const ancestors: { pid: number; startTime: string | null }[] = [{ pid: process.ppid, startTime: procStat(process.ppid)?.startTime ?? null }];
const grandparent = procStat(process.ppid)?.ppid;
if (process.env.npm_lifecycle_event !== undefined && grandparent !== undefined && grandparent > 1) {
  ancestors.push({ pid: grandparent, startTime: procStat(grandparent)?.startTime ?? null });
}
function gone(ancestor: { pid: number; startTime: string | null }): boolean {
  if (ancestor.startTime !== null) return procStat(ancestor.pid)?.startTime !== ancestor.startTime;
  // No /proc (macOS): a new parent pid is all there is to see.
  return ancestor === ancestors[0] && process.ppid !== ancestor.pid;
}
const parentWatch = setInterval(() => {
  const lost = ancestors.find(gone);
  if (lost !== undefined) shutdown(`${lost === ancestors[1] ? 'npm' : 'our parent'} (pid ${lost.pid}) is gone`, 0);
}, PARENT_CHECK_MS);

for (const app of apps) {
  // The IPC channel is how a service learns that this process is gone, even killed with SIGKILL
  // (scripts/exit-with-parent.mjs): it closes with us and the service stops itself.
  const child = spawn(process.execPath, [...SERVICE_NODE_FLAGS, '--import=./scripts/exit-with-parent.mjs', app.entry], {
    cwd: root,
    env: process.env,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  // Nothing is sent over it: it must not keep this process alive either.
  child.channel?.unref();
  children.push(child);
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue; // both are pipes (stdio above); typed nullable with an IPC slot
    const out = stream === child.stderr ? process.stderr : process.stdout;
    createInterface({ input: stream }).on('line', (line) => {
      // A closed terminal (npm killed with it) must not turn a clean stop into a crash.
      if (out.writable) out.write(`[${app.name}] ${line}\n`);
    });
  }
  child.on('exit', (code, signal) => {
    if (!exiting) shutdown(`the ${app.name} exited (${signal ?? code ?? 0})`, code ?? (signal === null ? 0 : 1));
    // Exits once both have; the readline interfaces end with their streams.
    if (running().length === 0) clearInterval(parentWatch);
  });
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => shutdown(`received ${signal}`, 0));
// stdout/stderr may go away with a killed terminal or npm: nothing to report to then, keep stopping.
for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
