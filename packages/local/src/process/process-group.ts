import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

/**
 * Child processes of local mode (builds and app revisions) run in their own process group, so a
 * cancel or a stop kills the whole tree (npm → sh → node), not just the first process.
 */
export interface GroupExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnedGroup {
  pid: number;
  /** Start time of the leader in clock ticks since boot (from /proc), to recognise it after a restart. */
  startTime: string | null;
  exited: Promise<GroupExit>;
}

export interface SpawnOptions {
  cwd: string;
  env: Record<string, string>;
  /** Each line of stdout/stderr as it comes. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Wrap the command, e.g. to run it as another user; gets the argv and returns the argv to run. */
  wrap?: (argv: string[]) => string[];
}

/** Reads a process's start time; null when it is gone (or /proc is not there). */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22; the command (field 2) may contain spaces, so count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

export function spawnGroup(command: string, options: SpawnOptions): SpawnedGroup {
  const argv = (options.wrap ?? ((a: string[]) => a))(['/bin/sh', '-c', command]);
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('empty command');
  const child = spawn(file, args, { cwd: options.cwd, env: options.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const readers = (['stdout', 'stderr'] as const).map((name) => {
    const stream = child[name];
    const reader = createInterface({ input: stream, crlfDelay: Infinity });
    reader.on('line', (line) => options.onLine?.(line, name));
    return new Promise<void>((resolve) => reader.once('close', resolve));
  });
  const exited = new Promise<GroupExit>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  }).then(async (exit) => {
    await Promise.all(readers);
    return exit;
  });
  const pid = child.pid;
  if (pid === undefined) {
    // spawn failed synchronously (e.g. ENOENT); `exited` rejects with the reason.
    return { pid: -1, startTime: null, exited };
  }
  return { pid, startTime: processStartTime(pid), exited };
}

/** Signals the whole group; false when it no longer exists. */
export function signalGroup(pid: number, signal: NodeJS.Signals | 0): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

export function groupAlive(pid: number): boolean {
  return signalGroup(pid, 0);
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the leader has exited. */
export async function stopGroup(group: { pid: number; exited: Promise<unknown> }, graceMs = 3000): Promise<void> {
  if (!signalGroup(group.pid, 'SIGTERM')) return;
  const timer = setTimeout(() => signalGroup(group.pid, 'SIGKILL'), graceMs);
  try {
    await group.exited.catch(() => undefined);
  } finally {
    clearTimeout(timer);
  }
  // Stragglers of the group (a grandchild that ignored SIGTERM) go too.
  signalGroup(group.pid, 'SIGKILL');
}
