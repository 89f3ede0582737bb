import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, symlink, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { DEBIAN_BROTLI_STATIC_MODULE, IMMUTABLE_CACHE_CONTROL, nginxConfig, prepareSiteCommand, REVALIDATE_CACHE_CONTROL, staticRulesScript } from '@zepid/core';
import { freePort, waitFor } from '../e2e/support.ts';

/** Bodies distinct enough to tell which file answered, and long enough to be compressed. */
export const BODY = {
  index: `<!doctype html><title>index</title><div id="root">INDEX</div>${'<!-- padding -->'.repeat(40)}`,
  about: `<!doctype html><title>about</title>ABOUT${'<!-- padding -->'.repeat(40)}`,
  docs: `<!doctype html><title>docs</title>DOCS${'<!-- padding -->'.repeat(40)}`,
  notFound: `<!doctype html><title>404</title>NOT FOUND PAGE${'<!-- padding -->'.repeat(40)}`,
  script: `console.log("SCRIPT");\n${'export const value = 1;\n'.repeat(200)}`,
  style: `body{color:red}/*STYLE*/${'.a{margin:0}'.repeat(100)}`,
  robots: 'User-agent: *\nAllow: /\n',
  secret: 'SECRET=do-not-serve\n',
  data: 'RAW DATA',
};

/**
 * A built output as a bundler leaves it, plus what must never be served: dotfiles and symlinks (one
 * out of the root, one inside it; nginx and the router both refuse every symlink).
 */
export async function writeSite(dir: string, options: { with404: boolean; rules?: boolean }): Promise<void> {
  await mkdir(join(dir, 'assets'), { recursive: true });
  await mkdir(join(dir, 'docs'), { recursive: true });
  await mkdir(join(dir, '.well-known'), { recursive: true });
  await writeFile(join(dir, 'index.html'), BODY.index);
  await writeFile(join(dir, 'about.html'), BODY.about);
  await writeFile(join(dir, 'docs', 'index.html'), BODY.docs);
  await writeFile(join(dir, 'assets', 'index-B9Ndfhfh.js'), BODY.script);
  await writeFile(join(dir, 'assets', 'main.8f4c2a1b.css'), BODY.style);
  await writeFile(join(dir, 'robots.txt'), BODY.robots);
  await writeFile(join(dir, 'logo.png'), Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'));
  await writeFile(join(dir, 'data'), BODY.data);
  await writeFile(join(dir, '.env'), BODY.secret);
  await writeFile(join(dir, '.well-known', 'secret.txt'), BODY.secret);
  await writeFile(join(dir, 'outside-secret.txt'), BODY.secret);
  await symlink('/etc/passwd', join(dir, 'passwd'));
  await symlink('about.html', join(dir, 'alias.html'));
  if (options.with404) await writeFile(join(dir, '404.html'), BODY.notFound);
  if (options.rules === true) {
    await writeFile(join(dir, '_redirects'), REDIRECTS);
    await writeFile(join(dir, '_headers'), HEADERS);
  }
}

/** A _redirects as Vite users ship it in public/: rules of the subset, then some outside it (left out with a warning). */
export const REDIRECTS = [
  '# moved pages',
  '/old-about /about 301',
  '/blog/* /posts/:splat',
  '/users/:id/profile /people/:id 308',
  '/go https://example.com/landing',
  '/with-query /about?from=old 301',
  '/app/* /index.html 200',
  '/docs-old /docs/ 200',
  '/missing-target /nowhere 200',
  '/force /about 200!',
  '/country /about 302 Country=nz',
  '/gone /about 410',
  '/proxy https://example.com/ 200',
  '/.hidden /about',
  '',
].join('\n');

export const HEADERS = [
  '/*',
  '  X-Frame-Options: DENY',
  '  X-Content-Type-Options: nosniff',
  '/assets/*',
  '  Cache-Control: public, max-age=60',
  '  X-Frame-Options: SAMEORIGIN',
  '  Access-Control-Allow-Origin: *',
  '/about',
  '  ! X-Frame-Options',
  '  Content-Type: text/plain',
  '  X-Price: $5',
  '  Content-Security-Policy: default-src \'self\'; img-src *',
  '',
].join('\n');

export interface Answer {
  status: number;
  headers: Record<string, string | undefined>;
  /** Decoded per content-encoding. */
  body: string;
}

/** One raw request: the path is sent as written (`..` included), the Host header names the app. */
export function fetchRaw(port: number, path: string, options: { method?: string; host?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers: { host: options.host ?? '127.0.0.1', ...options.headers }, timeout: 5000, agent: false },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          const raw = Buffer.concat(chunks);
          const encoding = response.headers['content-encoding'];
          const decoded = raw.length === 0 ? raw : encoding === 'gzip' ? gunzipSync(raw) : encoding === 'br' ? brotliDecompressSync(raw) : raw;
          const headers: Record<string, string | undefined> = {};
          for (const [name, value] of Object.entries(response.headers)) headers[name] = Array.isArray(value) ? value.join(', ') : value;
          resolve({ status: response.statusCode ?? 0, headers, body: decoded.toString('utf8') });
        });
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`timeout: ${path}`)));
    req.end();
  });
}

export function nginxAvailable(): boolean {
  return spawnSync('nginx', ['-v'], { stdio: 'ignore' }).status === 0 && existsSync(DEBIAN_BROTLI_STATIC_MODULE) && spawnSync('brotli', ['--version'], { stdio: 'ignore' }).status === 0;
}

export interface RunningNginx {
  port: number;
  /** What the rules script printed (its warnings). */
  rulesOutput: string;
  stop(): Promise<void>;
}

/**
 * Debian's nginx with the generated configuration over a copy of `site`, prepared (symlinks deleted,
 * precompressed) by the very command the image runs. Runs as a child of the test on a free loopback port; stop() kills it.
 */
export async function startNginx(site: string, workDir: string): Promise<RunningNginx> {
  const root = join(workDir, 'site');
  const runDir = join(workDir, 'run');
  await cp(site, root, { recursive: true, verbatimSymlinks: true });
  await mkdir(runDir, { recursive: true });
  // The site's _redirects/_headers → nginx rules, by the very script the generated Dockerfile runs.
  const rulesDir = join(runDir, 'rules');
  const rules = spawnSync(process.execPath, ['-e', staticRulesScript({ revalidate: REVALIDATE_CACHE_CONTROL, immutable: IMMUTABLE_CACHE_CONTROL }), root, rulesDir], { encoding: 'utf8' });
  if (rules.status !== 0) throw new Error(`the rules script failed: ${rules.stderr}`);
  const precompress = spawnSync('sh', ['-c', prepareSiteCommand(root)], { encoding: 'utf8' });
  if (precompress.status !== 0) throw new Error(`precompress failed: ${precompress.stderr}`);
  // nginx's workers run as nobody when the test runs as root: they must reach the copy.
  await chmod(workDir, 0o755);
  const port = await freePort();
  const config = join(runDir, 'nginx.conf');
  await writeFile(config, nginxConfig({ root, port, listen: '127.0.0.1', runDir, modules: [DEBIAN_BROTLI_STATIC_MODULE], rulesDir }));
  const child: ChildProcess = spawn('nginx', ['-c', config, '-e', 'stderr'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await waitFor('nginx to answer', async () => {
      if (child.exitCode !== null) throw new Error(`nginx exited: ${stderr}`);
      return fetchRaw(port, '/').then(
        () => true,
        () => false,
      );
    }, 10_000);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return {
    port,
    rulesOutput: `${rules.stdout}${rules.stderr}`,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
