import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { freePort, processAlive, waitFor } from './support.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const TOKEN = 'stop-test-token-0123456789';

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The pid of `node scripts/start.ts` in npm's process group (npm → sh → node), from /proc. */
function startScriptPid(pgid: number): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const group = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (group === pgid && argv.includes('scripts/start.ts')) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`no scripts/start.ts process in group ${pgid}`);
}

/**
 * `npm start` is stopped the ways a user stops it; each time every process it started (npm's
 * group: sh, start.ts, API, worker; and the deployed app's own process group) is gone and nothing
 * listens on its ports. Before, a SIGTERM to npm alone left start.ts, the worker and the router
 * running, and so did a SIGKILL of npm; a SIGKILL of start.ts left the API, the worker and its apps.
 */
describe('npm start stops everything it started', () => {
  const ways: [string, (npmPid: number) => void][] = [
    ['SIGTERM to npm alone (kill <npm pid>)', (pid) => process.kill(pid, 'SIGTERM')],
    ['SIGINT to the whole group (Ctrl-C in a terminal)', (pid) => process.kill(-pid, 'SIGINT')],
    ['SIGKILL to npm alone', (pid) => process.kill(pid, 'SIGKILL')],
    // start.ts runs no code then: the API and the worker notice their IPC channel to it closing.
    ['SIGKILL to start.ts itself (the API and the worker outlive it unless they watch it)', (pid) => process.kill(startScriptPid(pid), 'SIGKILL')],
  ];

  it.each(ways)('%s', async (_name, stop) => {
    const dataDir = await mkdtemp(join(tmpdir(), 'zepid-stop-'));
    const [apiPort, routerPort] = [await freePort(), await freePort()];
    const child = spawn('npm', ['start', '--silent'], {
      cwd: root,
      env: { ...process.env, DATA_DIR: dataDir, PORT: String(apiPort), LOCAL_ROUTER_PORT: String(routerPort), LOG_LEVEL: 'warn', DEPLOY_API_TOKENS: `local:${TOKEN}` },
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    for (const stream of [child.stdout, child.stderr]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const pgid = child.pid ?? -1;
    let appPid = 0;
    try {
      await waitFor('the API to answer', () => fetch(`http://127.0.0.1:${apiPort}/health/live`).then((r) => r.ok, () => false), 30_000);
      await waitFor('the router to listen', () => listening(routerPort), 30_000);

      // An app process (its own process group, started by the worker) must go too.
      const body = JSON.parse(await readFile(join(root, 'examples', 'node-server.json'), 'utf8')) as unknown;
      const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
      const posted = (await (await fetch(`http://127.0.0.1:${apiPort}/deploy`, { method: 'POST', headers, body: JSON.stringify(body) })).json()) as { deploymentId: string };
      await waitFor(
        'the app to be deployed',
        async () => {
          const status = (await (await fetch(`http://127.0.0.1:${apiPort}/deploy/${posted.deploymentId}/status`, { headers })).json()) as { status: string };
          if (status.status === 'failed' || status.status === 'cancelled') throw new Error(`deployment ${status.status}:\n${output}`);
          return status.status === 'completed';
        },
        60_000,
      );
      const registered = JSON.parse(await readFile(join(dataDir, 'processes.json'), 'utf8')) as { pid: number; purpose: string }[];
      const app = registered.find((group) => group.purpose === 'revision');
      if (app === undefined) throw new Error('no app process registered');
      appPid = app.pid;
      expect(processAlive(app.pid)).toBe(true);

      stop(pgid);

      await waitFor(
        'every process npm start started to exit',
        async () => !groupAlive(pgid) && !processAlive(app.pid) && !(await listening(apiPort)) && !(await listening(routerPort)),
        45_000,
      );
    } finally {
      // Whatever happened above, this test leaves nothing behind.
      for (const target of [-pgid, ...(appPid > 0 ? [-appPid] : [])]) {
        try {
          process.kill(target, 'SIGKILL');
        } catch {
          // gone
        }
      }
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 150_000);
});
