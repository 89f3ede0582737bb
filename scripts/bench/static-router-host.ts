/**
 * One local router serving one static site, alone in its process (so the A/B script can read its
 * CPU time from /proc): `node scripts/bench/static-router-host.ts <site dir> <cache dir> [<dir with
 * router.ts and static-site.ts>]`. The third argument lets a copy of older code be measured beside
 * the current one; LOCAL_STATIC_CACHE_MB sets its memory cache as the worker's does. Prints `{"port":…}` once it listens; SIGTERM closes it.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type * as RouterModule from '../../packages/local/src/runtime/router.ts';
import type * as SiteModule from '../../packages/local/src/runtime/static-site.ts';

const [siteDir, cacheDir, implDir = 'packages/local/src/runtime'] = process.argv.slice(2);
if (siteDir === undefined || cacheDir === undefined) throw new Error('usage: static-router-host.ts <site dir> <cache dir> [<implementation dir>]');
const { LocalRouter } = (await import(pathToFileURL(resolve(implDir, 'router.ts')).href)) as typeof RouterModule;
const { StaticSite } = (await import(pathToFileURL(resolve(implDir, 'static-site.ts')).href)) as typeof SiteModule;
// LOCAL_STATIC_CACHE_MB as the worker reads it (0: no memory cache); the default otherwise.
const cacheMb = process.env.LOCAL_STATIC_CACHE_MB;
const router = new LocalRouter({ host: '127.0.0.1', port: 0, ...(cacheMb === undefined ? {} : { staticCache: { maxBytes: Number(cacheMb) * 1024 * 1024, maxFileBytes: 256 * 1024 } }) });
await router.start();
router.set('site', { site: await StaticSite.open(siteDir, cacheDir) });
process.stdout.write(`${JSON.stringify({ port: router.listeningPort })}\n`);
process.once('SIGTERM', () => void router.close().then(() => process.exit(0)));
