import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { extractContext } from '@zepid/local';
import { packArchive } from '../src/steps/context-archive.ts';

describe('build context archive', () => {
  const longPath = `${'deep/'.repeat(30)}${'n'.repeat(120)}.txt`; // 270 characters: needs a PAX header
  const files = [
    { path: 'index.html', data: Buffer.from('<h1>hi</h1>') },
    { path: 'assets/app.js', data: Buffer.from('console.log(1)\n'.repeat(100)) },
    { path: 'empty.txt', data: Buffer.alloc(0) },
    { path: 'block.bin', data: Buffer.alloc(512, 7) },
    { path: 'ünïcødé/ファイル.txt', data: Buffer.from('utf-8 names') },
    { path: longPath, data: Buffer.from('long') },
  ];

  it('unpacks (with the sandbox extractor) to exactly the files it was given', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'zepid-archive-'));
    try {
      await extractContext(packArchive(files), dir);
      for (const file of files) expect(await readFile(join(dir, file.path))).toEqual(file.data);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('is a function of the files: same files in any order, same bytes; one byte changed, other bytes', () => {
    const first = packArchive(files);
    expect(packArchive([...files].reverse())).toEqual(first);
    const changed = files.map((file) => (file.path === 'index.html' ? { ...file, data: Buffer.from('<h1>hi!</h1>') } : file));
    expect(packArchive(changed)).not.toEqual(first);
  });
});
