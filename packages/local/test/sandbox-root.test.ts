import { chmod, mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sandboxRoot, traversableByOthers } from '../src/index.ts';

describe('sandboxRoot', () => {
  let dir: string;
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps DATA_DIR when every directory above it can be passed through, whatever DATA_DIR\'s own mode', async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-sandbox-root-'));
    await chmod(dir, 0o711);
    const data = join(dir, 'data');
    await mkdir(data, { mode: 0o700 });
    expect(traversableByOthers(data)).toBe(true);
    expect(await sandboxRoot(data, undefined, true)).toBe(data);
  });

  it('moves the sandboxes out of a DATA_DIR inside a private directory (a checkout under /root), and only under uid isolation', async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-sandbox-root-'));
    const data = join(dir, 'checkout', '.data');
    await mkdir(data, { recursive: true });
    await chmod(join(dir, 'checkout'), 0o700);
    expect(traversableByOthers(data)).toBe(false);
    expect(await sandboxRoot(data, undefined, false)).toBe(data);
    const moved = await sandboxRoot(data, undefined, true);
    expect(moved).toMatch(/^\/var\/tmp\/zepid-sandboxes-[0-9a-f]{16}$/);
    expect((await stat(moved)).mode & 0o777).toBe(0o711);
    expect(traversableByOthers(join(moved, 'work'))).toBe(true);
    // The same DATA_DIR always gets the same place (images and revisions survive a restart).
    expect(await sandboxRoot(data, undefined, true)).toBe(moved);
    await rm(moved, { recursive: true, force: true });
    expect(await sandboxRoot(data, join(dir, 'elsewhere'), true)).toBe(join(dir, 'elsewhere'));
  });
});
