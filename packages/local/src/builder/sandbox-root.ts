import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { chmod, lstat, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

/**
 * Whether a user that is neither the owner nor in the group may pass through every directory above
 * `path` (`path` itself not included: the worker makes DATA_DIR 0711 itself when it starts).
 */
export function traversableByOthers(path: string): boolean {
  let dir = resolve(path);
  for (;;) {
    const parent = dirname(dir);
    if (parent === dir) return true;
    dir = parent;
    try {
      if ((statSync(dir).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
  }
}

/**
 * Where the trees that builds and apps must reach live (work dirs, images, revisions, the toolchain,
 * caches): `LOCAL_SANDBOX_DIR`, else DATA_DIR itself. Under uid isolation a tenant's uid has to pass
 * through every parent of its sandbox; a DATA_DIR inside a private directory (a checkout under
 * /root, mode 0700, with the default ./.data) cannot give that, so those trees go to
 * `/var/tmp/zepid-sandboxes-<hash of DATA_DIR>` instead, made by the worker (mode 0711). The database,
 * secrets, artifacts and tokens stay in DATA_DIR, which tenants never need.
 */
export async function sandboxRoot(dataDir: string, configured: string | undefined, uidIsolation: boolean): Promise<string> {
  if (configured !== undefined && configured !== '') return resolve(configured);
  if (!uidIsolation || traversableByOthers(dataDir)) return resolve(dataDir);
  const root = join('/var/tmp', `zepid-sandboxes-${createHash('sha256').update(resolve(dataDir)).digest('hex').slice(0, 16)}`);
  await mkdir(root, { recursive: true, mode: 0o711 });
  // /var/tmp is writable by everyone: accept only a directory of our own, never a link another user planted.
  const entry = await lstat(root);
  if (!entry.isDirectory() || entry.uid !== process.getuid?.()) {
    throw new Error(`${root} exists and is not a directory of this user: remove it, or set LOCAL_SANDBOX_DIR`);
  }
  await chmod(root, 0o711);
  return root;
}
