import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DeployError } from '@zepid/core';
import { extractContext } from '../src/index.ts';

async function pack(cwd: string, paths: string[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of tar.c({ cwd, gzip: true, preservePaths: true }, paths)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Zip-slip: archive entries that would land outside the sandbox are refused, and nothing lands there. */
describe('build context extraction', () => {
  let dir: string;
  let target: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-slip-'));
    target = join(dir, 'sandbox', 'src');
    await mkdir(target, { recursive: true });
    await mkdir(join(dir, 'project', 'sub'), { recursive: true });
    await writeFile(join(dir, 'project', 'index.html'), '<h1>ok</h1>');
    await writeFile(join(dir, 'project', 'sub', 'a.txt'), 'a');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('unpacks an ordinary context', async () => {
    await extractContext(await pack(join(dir, 'project'), ['index.html', 'sub/a.txt']), target);
    expect(await readFile(join(target, 'index.html'), 'utf8')).toBe('<h1>ok</h1>');
    expect(await readFile(join(target, 'sub', 'a.txt'), 'utf8')).toBe('a');
  });

  const refuses = async (archive: Buffer, reason: RegExp) => {
    const error = await extractContext(archive, target).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DeployError);
    expect((error as DeployError).code).toBe('SOURCE_INVALID');
    expect((error as DeployError).message).toMatch(reason);
  };

  it('refuses an entry with .. that would escape the sandbox', async () => {
    await writeFile(join(dir, 'escape.txt'), 'pwned');
    await refuses(await pack(join(dir, 'project', 'sub'), ['../../escape.txt']), /escape\.txt/);
    expect(await readdir(join(dir, 'sandbox'))).toEqual(['src']);
    expect(existsSync(join(dir, 'sandbox', 'escape.txt'))).toBe(false);
  });

  it('refuses an absolute path', async () => {
    await refuses(await pack(dir, [join(dir, 'project', 'index.html')]), /absolute|\/project\/index\.html/);
  });

  it('refuses symbolic links, so a later entry cannot write through one', async () => {
    await symlink('/etc', join(dir, 'project', 'link'));
    await refuses(await pack(join(dir, 'project'), ['link', 'index.html']), /link \(SymbolicLink\)/);
    expect(existsSync(join(target, 'link'))).toBe(false);
  });
});
