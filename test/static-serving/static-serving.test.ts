import { existsSync } from 'node:fs';
import { chmod, cp, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import dockerfileUtils from 'dockerfile-utils';
import { DEBIAN_BROTLI_STATIC_MODULE, generateDockerfile, IMMUTABLE_CACHE_CONTROL, nginxConfig, STATIC_IMAGE_RULES_DIR } from '@zepid/core';
import { LocalRouter } from '../../packages/local/src/index.ts';
import { StaticSite } from '../../packages/local/src/runtime/static-site.ts';
import type { Answer, RunningNginx } from './site.ts';
import { BODY, fetchRaw, nginxAvailable, startNginx, writeSite } from './site.ts';

/**
 * One table of cases, run against the local router and against Debian's nginx with the generated
 * image's configuration: a static site answers the same locally and in Azure.
 */
interface Case {
  name: string;
  site: 'spa' | 'with404' | 'rules';
  path: string;
  method?: string;
  headers?: Record<string, string>;
  /** Sends If-None-Match with the ETag a first identical request got. */
  conditional?: boolean;
  status: number;
  type?: string;
  cache?: string;
  encoding?: 'gzip' | 'br' | undefined;
  vary?: string | undefined;
  body?: string;
  /** For answers whose body is not a file's (errors): only that it does not leak this. */
  bodyExcludes?: string;
  location?: string;
  /** Other response headers, by lower-case name (undefined: absent). */
  more?: Record<string, string | undefined>;
}

const HTML = 'text/html; charset=utf-8';
const JS = 'text/javascript; charset=utf-8';
const REVALIDATE = 'no-cache';
const ACCEPT = { 'accept-encoding': 'gzip, deflate, br' };

const BROTLI_ONLY = { 'accept-encoding': 'br' };

const CASES: Case[] = [
  { name: 'root', site: 'spa', path: '/', status: 200, type: HTML, cache: REVALIDATE, body: BODY.index },
  { name: 'root, brotli when both are accepted', site: 'spa', path: '/', headers: ACCEPT, status: 200, type: HTML, cache: REVALIDATE, encoding: 'br', vary: 'Accept-Encoding', body: BODY.index },
  { name: 'root, gzip', site: 'spa', path: '/', headers: { 'accept-encoding': 'gzip' }, status: 200, type: HTML, encoding: 'gzip', vary: 'Accept-Encoding', body: BODY.index },
  { name: '/about finds about.html', site: 'spa', path: '/about', status: 200, type: HTML, cache: REVALIDATE, body: BODY.about },
  { name: '/about.html itself', site: 'spa', path: '/about.html', status: 200, type: HTML, body: BODY.about },
  { name: '/docs finds docs/index.html', site: 'spa', path: '/docs', status: 200, type: HTML, body: BODY.docs },
  { name: '/docs/ finds docs/index.html', site: 'spa', path: '/docs/', status: 200, type: HTML, body: BODY.docs },
  { name: 'a client route (SPA fallback)', site: 'spa', path: '/users/42/settings?tab=1', status: 200, type: HTML, cache: REVALIDATE, body: BODY.index },
  { name: 'a client route, compressed', site: 'spa', path: '/users/42', headers: ACCEPT, status: 200, type: HTML, encoding: 'br', body: BODY.index },
  { name: 'fingerprinted script (Vite)', site: 'spa', path: '/assets/index-B9Ndfhfh.js', status: 200, type: JS, cache: IMMUTABLE_CACHE_CONTROL, body: BODY.script },
  { name: 'fingerprinted script, brotli', site: 'spa', path: '/assets/index-B9Ndfhfh.js', headers: ACCEPT, status: 200, type: JS, cache: IMMUTABLE_CACHE_CONTROL, encoding: 'br', vary: 'Accept-Encoding', body: BODY.script },
  { name: 'fingerprinted script, brotli only', site: 'spa', path: '/assets/index-B9Ndfhfh.js', headers: BROTLI_ONLY, status: 200, type: JS, encoding: 'br', vary: 'Accept-Encoding', body: BODY.script },
  { name: 'client route, brotli only', site: 'spa', path: '/users/42', headers: BROTLI_ONLY, status: 200, type: HTML, encoding: 'br', body: BODY.index },
  { name: 'fingerprinted script, refused encodings', site: 'spa', path: '/assets/index-B9Ndfhfh.js', headers: { 'accept-encoding': 'identity' }, status: 200, type: JS, encoding: undefined, body: BODY.script },
  { name: 'fingerprinted script, gzip only', site: 'spa', path: '/assets/index-B9Ndfhfh.js', headers: { 'accept-encoding': 'gzip' }, status: 200, type: JS, encoding: 'gzip', body: BODY.script },
  { name: 'fingerprinted stylesheet (webpack)', site: 'spa', path: '/assets/main.8f4c2a1b.css', status: 200, type: 'text/css; charset=utf-8', cache: IMMUTABLE_CACHE_CONTROL, body: BODY.style },
  { name: 'a missing fingerprinted asset is the SPA page, not cached for a year', site: 'spa', path: '/assets/index-Zz9old00.js', status: 200, type: HTML, cache: REVALIDATE, body: BODY.index },
  { name: 'small text is not compressed', site: 'spa', path: '/robots.txt', headers: ACCEPT, status: 200, type: 'text/plain; charset=utf-8', cache: REVALIDATE, encoding: undefined, body: BODY.robots },
  { name: 'image type, not fingerprinted', site: 'spa', path: '/logo.png', headers: ACCEPT, status: 200, type: 'image/png', cache: REVALIDATE, encoding: undefined },
  { name: 'no extension', site: 'spa', path: '/data', status: 200, type: 'application/octet-stream', body: BODY.data },
  { name: 'HEAD', site: 'spa', path: '/', method: 'HEAD', status: 200, type: HTML, cache: REVALIDATE, body: '' },
  { name: 'POST is refused', site: 'spa', path: '/', method: 'POST', status: 405 },
  { name: 'ETag revalidation', site: 'spa', path: '/', conditional: true, status: 304, cache: REVALIDATE, body: '' },
  { name: 'ETag revalidation of the brotli copy', site: 'spa', path: '/assets/index-B9Ndfhfh.js', headers: ACCEPT, conditional: true, status: 304, cache: IMMUTABLE_CACHE_CONTROL, body: '' },
  { name: 'a dotfile does not exist', site: 'spa', path: '/.env', status: 200, type: HTML, body: BODY.index },
  { name: 'a dot directory does not exist', site: 'spa', path: '/.well-known/secret.txt', status: 200, type: HTML, body: BODY.index },
  { name: 'an encoded dotfile does not exist', site: 'spa', path: '/%2eenv', status: 200, type: HTML, body: BODY.index },
  { name: 'a symlink out of the root is not followed', site: 'spa', path: '/passwd', status: 200, type: HTML, body: BODY.index },
  { name: 'a symlink inside the root is not followed either', site: 'spa', path: '/alias.html', status: 200, type: HTML, body: BODY.index },
  { name: '.. inside the root resolves', site: 'spa', path: '/assets/../about', status: 200, type: HTML, body: BODY.about },
  { name: '.. above the root is refused', site: 'spa', path: '/../outside-secret.txt', status: 400, bodyExcludes: 'SECRET' },
  { name: 'encoded .. above the root is refused', site: 'spa', path: '/%2e%2e/%2e%2e/etc/passwd', status: 400, bodyExcludes: 'root:' },
  { name: 'with 404.html: unknown path', site: 'with404', path: '/nope', status: 404, type: HTML, cache: REVALIDATE, body: BODY.notFound },
  { name: 'with 404.html: unknown path, compressed', site: 'with404', path: '/nope/deeper', headers: ACCEPT, status: 404, type: HTML, encoding: 'br', body: BODY.notFound },
  { name: 'with 404.html: a dotfile', site: 'with404', path: '/.env', status: 404, type: HTML, body: BODY.notFound },
  { name: 'with 404.html: root still answers', site: 'with404', path: '/', status: 200, type: HTML, body: BODY.index },
  { name: 'with 404.html: /about', site: 'with404', path: '/about', status: 200, type: HTML, body: BODY.about },
  // _redirects and _headers (site.ts: REDIRECTS, HEADERS), in the subset static-rules.ts documents.
  { name: '_redirects: 301', site: 'rules', path: '/old-about', status: 301, location: '/about', cache: REVALIDATE, more: { 'x-frame-options': 'DENY' } },
  { name: '_redirects: the query string is kept', site: 'rules', path: '/old-about?ref=mail&x=1', status: 301, location: '/about?ref=mail&x=1' },
  { name: '_redirects: splat, 302 by default', site: 'rules', path: '/blog/2024/hello-world', status: 302, location: '/posts/2024/hello-world' },
  { name: '_redirects: splat of nothing', site: 'rules', path: '/blog/', status: 302, location: '/posts/' },
  { name: '_redirects: a splat never matches a dot segment', site: 'rules', path: '/blog/.env', status: 200, type: HTML, body: BODY.index },
  { name: '_redirects: placeholder, 308', site: 'rules', path: '/users/42/profile', status: 308, location: '/people/42' },
  { name: '_redirects: a placeholder is one segment', site: 'rules', path: '/users/42/x/profile', status: 200, body: BODY.index },
  { name: '_redirects: to another site', site: 'rules', path: '/go', status: 302, location: 'https://example.com/landing' },
  { name: "_redirects: the destination's own query replaces the request's", site: 'rules', path: '/with-query?a=b', status: 301, location: '/about?from=old' },
  { name: '_redirects: 200 rewrite of a client route to the index', site: 'rules', path: '/app/settings/deep', status: 200, type: HTML, cache: REVALIDATE, body: BODY.index, more: { 'x-frame-options': 'DENY' } },
  { name: '_redirects: 200 rewrite, compressed', site: 'rules', path: '/app/x', headers: ACCEPT, status: 200, encoding: 'br', body: BODY.index },
  { name: '_redirects: 200 rewrite finds docs/index.html', site: 'rules', path: '/docs-old', status: 200, type: HTML, body: BODY.docs },
  { name: '_redirects: 200 rewrite to nothing is not found (SPA: the index)', site: 'rules', path: '/missing-target', status: 200, body: BODY.index },
  { name: '_redirects: a rule applies before a file', site: 'rules', path: '/old-about', method: 'HEAD', status: 301, location: '/about' },
  { name: '_redirects: force (!) is left out', site: 'rules', path: '/force', status: 200, body: BODY.index },
  { name: '_redirects: conditions are left out', site: 'rules', path: '/country', status: 200, body: BODY.index },
  { name: '_redirects: code 410 is left out', site: 'rules', path: '/gone', status: 200, body: BODY.index },
  { name: '_redirects itself is not served', site: 'rules', path: '/_redirects', status: 200, body: BODY.index },
  { name: '_headers itself is not served', site: 'rules', path: '/_headers', status: 200, body: BODY.index },
  { name: '_headers: /* applies to every path', site: 'rules', path: '/about', status: 200, type: HTML, cache: REVALIDATE, body: BODY.about, more: { 'x-frame-options': 'DENY', 'x-content-type-options': 'nosniff', 'content-security-policy': "default-src 'self'; img-src *", 'x-price': undefined } },
  { name: '_headers: Cache-Control replaces the fingerprint one; first block wins per name', site: 'rules', path: '/assets/index-B9Ndfhfh.js', status: 200, type: JS, cache: 'public, max-age=60', more: { 'x-frame-options': 'DENY', 'access-control-allow-origin': '*' } },
  { name: '_headers: on a 304 too', site: 'rules', path: '/assets/index-B9Ndfhfh.js', conditional: true, status: 304, cache: 'public, max-age=60', more: { 'access-control-allow-origin': '*' } },
  { name: '_headers: a client route gets /* headers', site: 'rules', path: '/some/route', status: 200, body: BODY.index, more: { 'x-frame-options': 'DENY', 'access-control-allow-origin': undefined } },
  { name: 'no _headers: nothing added', site: 'spa', path: '/about', status: 200, body: BODY.about, more: { 'x-frame-options': undefined } },
];

type Target = (site: Case['site'], path: string, options: { method?: string; headers?: Record<string, string> }) => Promise<Answer>;

async function ask(target: Target, row: Case): Promise<Answer> {
  const headers = { ...row.headers };
  if (row.conditional === true) {
    const first = await target(row.site, row.path, { headers });
    const etag = first.headers.etag;
    if (etag === undefined) throw new Error(`${row.name}: no ETag to revalidate with`);
    headers['if-none-match'] = etag;
  }
  return target(row.site, row.path, { ...(row.method === undefined ? {} : { method: row.method }), headers });
}

function check(row: Case, answer: Answer): void {
  const got: Partial<Record<keyof Case, unknown>> = { status: answer.status };
  const want: Partial<Record<keyof Case, unknown>> = { status: row.status };
  if (row.type !== undefined) [got.type, want.type] = [answer.headers['content-type'], row.type];
  if (row.cache !== undefined) [got.cache, want.cache] = [answer.headers['cache-control'], row.cache];
  if ('encoding' in row) [got.encoding, want.encoding] = [answer.headers['content-encoding'], row.encoding];
  if ('vary' in row) [got.vary, want.vary] = [answer.headers.vary, row.vary];
  if (row.body !== undefined) [got.body, want.body] = [answer.body, row.body];
  if (row.location !== undefined) [got.location, want.location] = [answer.headers.location, row.location];
  if (row.more !== undefined) [got.more, want.more] = [Object.fromEntries(Object.keys(row.more).map((name) => [name, answer.headers[name]])), row.more];
  expect(got, row.name).toEqual(want);
  if (row.bodyExcludes !== undefined) expect(answer.body, row.name).not.toContain(row.bodyExcludes);
  // Every answer with a file has an ETag (revalidation depends on it).
  if ((answer.status === 200 || answer.status === 304) && row.method !== 'HEAD') expect(answer.headers.etag, row.name).toMatch(/^"[^"]+"$/);
}

let dir: string;
const sites: Record<Case['site'], string> = { spa: '', with404: '', rules: '' };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'zepid-static-'));
  // nginx's workers run as nobody when the tests run as root: they must reach the sites.
  await chmod(dir, 0o755);
  sites.spa = join(dir, 'spa');
  sites.with404 = join(dir, 'with404');
  await writeSite(sites.spa, { with404: false });
  await writeSite(sites.with404, { with404: true });
  sites.rules = join(dir, 'rules');
  await writeSite(sites.rules, { with404: false, rules: true });
});

/** The rules left out of site.ts's files, as both the router and the image's build log say them. */
const EXPECTED_WARNINGS = [
  '_redirects:10: left out (code 200!: only 301, 302, 303, 307, 308 and 200 are supported)',
  '_redirects:11: left out (expected "source destination [code]"; conditions and other fields are not supported)',
  '_redirects:12: left out (code 410: only 301, 302, 303, 307, 308 and 200 are supported)',
  '_redirects:13: left out (200 serves a path of this site: no URL, query or fragment)',
  '_redirects:14: left out (source /.hidden: a path segment cannot start with a dot)',
  '_headers:9: left out (detaching a header with ! is not supported)',
  '_headers:10: left out (Content-Type is set by the server)',
  '_headers:11: left out (the value of X-Price must be 1-2000 printable ASCII characters without ", \\ and $)',
];

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * The router answers files from memory (the default: read from disk on first request, then kept),
 * from disk for files over the per-file size, or always from disk with the cache off: each way gives
 * the table's answers. With the cache on, every case is asked twice (first read, then from memory).
 */
const ROUTER_CACHES = [
  { name: 'files from memory (the default)', staticCache: undefined, asks: 2, cached: true },
  { name: 'files over the per-file size (300 bytes) streamed from disk', staticCache: { maxBytes: 1024 * 1024, maxFileBytes: 300 }, asks: 2, cached: true },
  { name: 'no memory cache (LOCAL_STATIC_CACHE_MB=0): every file streamed from disk', staticCache: { maxBytes: 0, maxFileBytes: 1 }, asks: 1, cached: false },
] as const;

describe.each(ROUTER_CACHES)('static sites through the local router, $name', ({ staticCache, asks, cached }) => {
  let router: LocalRouter;
  const target: Target = (site, path, options) => fetchRaw(router.listeningPort, path, { ...options, host: `${site}.localhost` });

  beforeAll(async () => {
    router = new LocalRouter({ host: '127.0.0.1', port: 0, ...(staticCache === undefined ? {} : { staticCache }) });
    await router.start();
    for (const site of ['spa', 'with404', 'rules'] as const) router.set(site, { site: await StaticSite.open(sites[site], join(dir, `cache-${site}`)) });
  });

  it('says which rules it left out, and why', () => {
    const site = router.target('rules');
    expect(site !== undefined && 'site' in site ? site.site.ruleWarnings : null).toEqual(EXPECTED_WARNINGS);
  });

  afterAll(async () => {
    await router.close();
  });

  it.each(CASES)('$name: $path', async (row) => {
    for (let time = 0; time < asks; time += 1) check(row, await ask(target, row));
  });

  it(cached ? 'answered from memory, keeping no file over the per-file size' : 'kept nothing in memory', () => {
    const usage = router.staticCache?.usage ?? { files: 0, bytes: 0 };
    expect(usage.files > 0).toBe(cached);
    if (staticCache !== undefined && cached) expect(usage.bytes).toBeLessThanOrEqual(staticCache.maxFileBytes * usage.files);
  });
});

// CI installs nginx (.ci/run) and requires this half; elsewhere it runs when nginx is installed.
const nginxRequired = process.env.ZEPID_TEST_NGINX === 'required';
describe.runIf(nginxRequired || nginxAvailable())("static sites through Debian's nginx with the generated configuration", () => {
  const servers: Partial<Record<Case['site'], RunningNginx>> = {};
  const target: Target = (site, path, options) => {
    const server = servers[site];
    if (server === undefined) throw new Error(`nginx for ${site} did not start`);
    return fetchRaw(server.port, path, options);
  };

  beforeAll(async () => {
    if (!nginxAvailable()) throw new Error('nginx, libnginx-mod-http-brotli-static and brotli are required: apt-get install nginx libnginx-mod-http-brotli-static brotli');
    for (const site of ['spa', 'with404', 'rules'] as const) servers[site] = await startNginx(sites[site], join(dir, `nginx-${site}`));
  });

  it("the image's rules script prints the same warnings", () => {
    const printed = (servers.rules?.rulesOutput ?? '').split('\n').filter((line) => line.startsWith('static site rules: _'));
    expect(printed).toEqual(EXPECTED_WARNINGS.map((warning) => `static site rules: ${warning}`));
  });

  afterAll(async () => {
    await Promise.all(Object.values(servers).map((server) => server.stop()));
  });

  it.each(CASES)('$name: $path', async (row) => {
    check(row, await ask(target, row));
  });
});

describe('the generated image of a static site', () => {
  const dockerfile = generateDockerfile({ kind: 'static', install: null, build: null, start: null, port: 8080, framework: 'static-html', packageManager: null, outputDir: null, outputHint: null, image: 'start' });

  it('writes exactly the nginx configuration the table runs (the RUN line, evaluated by sh)', () => {
    const logical = dockerfile.replace(/\\\n/g, ' ');
    const run = logical.split('\n').find((line) => line.includes('> /etc/zepid/nginx.conf'));
    const printf = run?.slice(run.indexOf('printf'), run.indexOf('> /etc/zepid/nginx.conf'));
    if (printf === undefined) throw new Error(`no RUN writing the nginx configuration in:\n${dockerfile}`);
    const written = spawnSync('sh', ['-c', printf], { encoding: 'utf8' });
    expect(written.status).toBe(0);
    expect(written.stdout).toBe(nginxConfig({ root: '/site', port: 8080, runDir: '/tmp/nginx', modules: [DEBIAN_BROTLI_STATIC_MODULE], rulesDir: STATIC_IMAGE_RULES_DIR }));
    expect(dockerfile).toContain(`COPY --from=build /zepid-rules ${STATIC_IMAGE_RULES_DIR}`);
    expect(dockerfile).toContain('FROM debian:bookworm-slim');
    expect(dockerfile).toContain('USER nobody');
  });

  it("turns the built site's _redirects and _headers into nginx rules (the RUN line, run by sh over a copy of the rules site)", async () => {
    const run = dockerfile.split('\n').find((line) => line.startsWith('RUN node -e ') && line.endsWith(' /site /zepid-rules'));
    if (run === undefined) throw new Error(`no RUN making the nginx rules in:\n${dockerfile}`);
    const copy = join(dir, 'image-rules-site');
    await cp(sites.rules, copy, { recursive: true, verbatimSymlinks: true });
    const out = join(dir, 'image-rules');
    const command = `${run.slice('RUN '.length, -' /site /zepid-rules'.length)} ${copy} ${out}`;
    const result = spawnSync('sh', ['-c', command], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr.split('\n').filter((line) => line !== '')).toEqual(EXPECTED_WARNINGS.map((warning) => `static site rules: ${warning}`));
    expect(result.stdout).toContain('static site rules: 8 redirects, 3 header rules');
    expect((await readdir(out)).sort()).toEqual(['rules-headers.conf', 'rules-http.conf', 'rules-server.conf']);
    expect(await readFile(join(out, 'rules-server.conf'), 'utf8')).toContain('location ~ "^/old-about$" {\n  return 301 "/about$is_args$args";\n}');
    // The two files configure the image; they are not served from it.
    expect(existsSync(join(copy, '_redirects')) || existsSync(join(copy, '_headers'))).toBe(false);
  });

  it('passes dockerfile-utils with its optional rules as errors', () => {
    const ERROR = 2;
    const problems = dockerfileUtils.validate(dockerfile, {
      deprecatedMaintainer: ERROR,
      directiveCasing: ERROR,
      emptyContinuationLine: ERROR,
      instructionCasing: ERROR,
      instructionCmdMultiple: ERROR,
      instructionJSONInSingleQuotes: ERROR,
      instructionWorkdirRelative: ERROR,
    });
    expect(problems.map((problem) => problem.message)).toEqual([]);
  });
});
