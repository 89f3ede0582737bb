import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalRouter } from '../src/index.ts';
import { StaticFileCache, StaticSite } from '../src/runtime/static-site.ts';

/** GET through the router (Node's resolver may not know *.localhost: connect to 127.0.0.1 with the Host header). */
function get(port: number, app: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host: `${app}.localhost:${port}` } }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the router keeps static files in memory, bounded', () => {
  let dir: string;
  let siteDir: string;
  let site: StaticSite;
  const KB = 1024;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-static-cache-'));
    siteDir = join(dir, 'site');
    await mkdir(siteDir);
    for (const name of ['a', 'b', 'c', 'd']) await writeFile(join(siteDir, `${name}.png`), Buffer.alloc(4 * KB, name));
    await writeFile(join(siteDir, 'big.png'), Buffer.alloc(9 * KB, 'z'));
    await writeFile(join(siteDir, 'index.html'), '<!doctype html>index');
    site = await StaticSite.open(siteDir, join(dir, 'cache'));
    site.served = true;
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps at most maxBytes, the least recently served file leaving first', async () => {
    const cache = new StaticFileCache({ maxBytes: 10 * KB, maxFileBytes: 8 * KB });
    const path = (name: string) => join(siteDir, `${name}.png`);
    for (const name of ['a', 'b', 'c']) await cache.load(site, path(name));
    // 12 KiB asked for, 10 allowed: a (the oldest) is gone.
    expect(cache.usage).toEqual({ files: 2, bytes: 8 * KB });
    expect(cache.get(path('a'))).toBeUndefined();
    // b served again is now the most recent: d pushes c out, not b.
    expect(cache.get(path('b'))?.equals(Buffer.alloc(4 * KB, 'b'))).toBe(true);
    await cache.load(site, path('d'));
    expect(cache.get(path('c'))).toBeUndefined();
    expect(cache.get(path('b'))).toBeDefined();
    expect(cache.get(path('d'))).toBeDefined();
    expect(cache.usage.bytes).toBeLessThanOrEqual(10 * KB);
  });

  it('reads a file over the per-file size but does not keep it; concurrent requests share one read', async () => {
    const cache = new StaticFileCache({ maxBytes: 100 * KB, maxFileBytes: 8 * KB });
    expect(cache.holds(8 * KB)).toBe(true);
    expect(cache.holds(8 * KB + 1)).toBe(false);
    const big = await cache.load(site, join(siteDir, 'big.png'));
    expect(big.length).toBe(9 * KB);
    expect(cache.usage).toEqual({ files: 0, bytes: 0 });
    const [first, second] = await Promise.all([cache.load(site, join(siteDir, 'a.png')), cache.load(site, join(siteDir, 'a.png'))]);
    expect(first).toBe(second);
    expect(cache.usage).toEqual({ files: 1, bytes: 4 * KB });
  });

  it('refuses bounds that are not whole numbers, and never holds a file larger than the total', () => {
    expect(() => new StaticFileCache({ maxBytes: -1, maxFileBytes: 1 })).toThrow(/maxBytes/);
    expect(() => new StaticFileCache({ maxBytes: 10, maxFileBytes: 0 })).toThrow(/maxFileBytes/);
    expect(new StaticFileCache({ maxBytes: 10, maxFileBytes: 100 }).holds(11)).toBe(false);
  });

  it("drops a site's files when the router stops serving it (replaced by a new revision, or removed), and keeps none of a site it does not serve", async () => {
    const router = new LocalRouter({ host: '127.0.0.1', port: 0, staticCache: { maxBytes: 100 * KB, maxFileBytes: 8 * KB } });
    await router.start();
    try {
      const v1 = await StaticSite.open(siteDir, join(dir, 'cache'));
      router.set('app', { site: v1 });
      expect(await get(router.listeningPort, 'app', '/a.png')).toEqual({ status: 200, body: 'a'.repeat(4 * KB) });
      expect(await get(router.listeningPort, 'app', '/index.html')).toEqual({ status: 200, body: '<!doctype html>index' });
      expect(router.staticCache?.usage.files).toBe(2);
      const v2 = await StaticSite.open(siteDir, join(dir, 'cache'));
      router.set('app', { site: v2 });
      expect(v1.served).toBe(false);
      expect(router.staticCache?.usage.files).toBe(0);
      expect((await get(router.listeningPort, 'app', '/b.png')).status).toBe(200);
      expect(router.staticCache?.usage.files).toBe(1);
      // A read that ends after its site left keeps nothing.
      await router.staticCache?.load(v1, join(siteDir, 'c.png'));
      expect(router.staticCache?.usage.files).toBe(1);
      router.remove('app');
      expect(router.staticCache?.usage).toEqual({ files: 0, bytes: 0 });
      expect((await get(router.listeningPort, 'app', '/b.png')).status).toBe(404);
    } finally {
      await router.close();
    }
  });

  it('with maxBytes 0 (LOCAL_STATIC_CACHE_MB=0) the router has no cache and streams every file', async () => {
    const router = new LocalRouter({ host: '127.0.0.1', port: 0, staticCache: { maxBytes: 0, maxFileBytes: 1 } });
    await router.start();
    try {
      router.set('app', { site: await StaticSite.open(siteDir, join(dir, 'cache')) });
      expect(router.staticCache).toBeUndefined();
      expect(await get(router.listeningPort, 'app', '/big.png')).toEqual({ status: 200, body: 'z'.repeat(9 * KB) });
    } finally {
      await router.close();
    }
  });
});
