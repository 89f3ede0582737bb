/**
 * `npm start`: runs the API and the worker side by side on the embedded defaults (or whatever the
 * environment configures), prefixes their output, forwards SIGINT/SIGTERM, and stops both if
 * either exits. In production each runs in its own container instead (see Dockerfile).
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { SERVICE_NODE_FLAGS } from './node-flags.ts';
import { precompile } from './precompiled.mjs';

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

function shutdown(signal: NodeJS.Signals, code: number): void {
  if (exiting) return;
  exiting = true;
  process.exitCode = code;
  for (const child of children) if (child.exitCode === null) child.kill(signal);
}

for (const app of apps) {
  const child = spawn(process.execPath, [...SERVICE_NODE_FLAGS, app.entry], { cwd: root, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  for (const stream of [child.stdout, child.stderr]) {
    const out = stream === child.stderr ? process.stderr : process.stdout;
    createInterface({ input: stream }).on('line', (line) => out.write(`[${app.name}] ${line}\n`));
  }
  child.on('exit', (code, signal) => {
    if (!exiting) process.stderr.write(`[${app.name}] exited (${signal ?? code ?? 0}); stopping the others\n`);
    shutdown('SIGTERM', code ?? (signal === null ? 0 : 1));
  });
}

process.on('SIGINT', () => shutdown('SIGINT', 0));
process.on('SIGTERM', () => shutdown('SIGTERM', 0));
