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

  it('packs plain tar for a builder on the same disk and tar.gz for one that reads it remotely; the extractor takes both', async () => {
    const tar = packArchive(files, 'tar');
    const gz = packArchive(files, 'tar.gz');
    // gzip's magic bytes (RFC 1952 §2.3.1) only on the tar.gz; a tar's first header carries "ustar" at offset 257 (POSIX pax/ustar).
    expect([...gz.subarray(0, 2)]).toEqual([0x1f, 0x8b]);
    expect([...tar.subarray(0, 2)]).not.toEqual([0x1f, 0x8b]);
    expect(tar.subarray(257, 262).toString('latin1')).toBe('ustar');
    expect(tar.length % 512).toBe(0);
    for (const archive of [tar, gz]) {
      const dir = await mkdtemp(join(tmpdir(), 'zepid-archive-'));
      try {
        await extractContext(archive, dir);
        for (const file of files) expect(await readFile(join(dir, file.path))).toEqual(file.data);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
  });
});
