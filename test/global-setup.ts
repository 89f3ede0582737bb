import { chmodSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Every test's temporary directories (data dirs, sandboxes, sites) go under one directory per run
 * (TMPDIR, inherited by the test workers and every process they start), so at the end the processes
 * a test left behind can be told from everyone else's on the machine: their working directory or
 * command line is under it. `npm test` fails when one is left, names it, and kills it.
 */
export default function setup(): () => Promise<void> {
  const runDir = mkdtempSync(join(tmpdir(), 'zepid-test-run-'));
  // Like /tmp (sticky, world-writable): builds and apps run as nobody when the tests run as root,
  // and some tests hand them a file to write here.
  chmodSync(runDir, 0o1777);
  process.env.TMPDIR = runDir;

  return async () => {
    // A group being stopped as the last test ended may still be exiting: give it a moment.
    let left = leftovers(runDir);
    for (let waited = 0; left.length > 0 && waited < 10_000; waited += 250) {
      await sleep(250);
      left = leftovers(runDir);
    }
    for (const { pid } of left) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    rmSync(runDir, { recursive: true, force: true });
    if (left.length > 0) {
      throw new Error(`the tests left ${left.length} processes running (killed now):\n${left.map((p) => `  pid ${p.pid} in ${p.cwd}: ${p.command}`).join('\n')}`);
    }
  };
}

function leftovers(runDir: string): { pid: number; cwd: string; command: string }[] {
  const found = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      // Zombies (already exited, not yet reaped) have an empty command line: not running.
      if (command !== '' && (cwd.startsWith(runDir) || command.includes(runDir))) found.push({ pid, cwd, command });
    } catch {
      // Exited while looked at, or not ours to read.
    }
  }
  return found;
}
