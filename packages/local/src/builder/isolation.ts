import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

export type IsolationSetting = 'auto' | 'uid' | 'none';

/**
 * How local mode keeps a deployed project's build and start commands away from the service:
 *
 * - `uid`: commands run as an unprivileged user (default nobody, 65534) via `setpriv`, with no
 *   supplementary groups and no new privileges. The service creates its files owner-only (umask
 *   077) and leaves DATA_DIR traversable but not listable, so a build can reach its own sandbox but
 *   cannot read the database, secrets, artifacts or tokens. Needs the worker to run as root.
 * - `none`: commands run as the worker's own user, with only the cleaned environment between them
 *   and the service's files. What a developer gets when running as themselves.
 *
 * Neither is a container: the network, other processes and world-readable files stay visible.
 */
export interface Isolation {
  readonly mode: 'uid' | 'none';
  /** Runs user commands as the sandbox user. */
  readonly wrap: (argv: string[]) => string[];
  /** Gives the sandbox user a tree it must write: its sandbox, npm's cache, a revision's HOME. */
  readonly handOver: (path: string) => Promise<void>;
  /** Lets the sandbox user pass through these directories (0711) without listing or reading them. */
  readonly traversable: (paths: readonly string[]) => Promise<void>;
}

const SETPRIV = '/usr/bin/setpriv';

export function resolveIsolation(setting: IsolationSetting, user: { uid: number; gid: number }): Isolation {
  const isRoot = process.getuid?.() === 0;
  const canSwitch = isRoot && existsSync(SETPRIV);
  if (setting === 'uid' && !canSwitch) {
    throw new Error(`LOCAL_BUILD_ISOLATION=uid needs the worker to run as root with ${SETPRIV} installed`);
  }
  if (setting === 'none' || !canSwitch) {
    return {
      mode: 'none',
      wrap: (argv) => argv,
      handOver: () => Promise.resolve(),
      traversable: () => Promise.resolve(),
    };
  }
  return {
    mode: 'uid',
    wrap: (argv) => [SETPRIV, `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--no-new-privs', '--', ...argv],
    handOver: async (path) => {
      await run('chown', ['-R', `${user.uid}:${user.gid}`, path]);
    },
    traversable: async (paths) => {
      for (const path of paths) await chmod(path, 0o711);
    },
  };
}
