import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateDockerfile, installInputs, planBuild } from '../src/index.ts';

const files = (entries: Record<string, string | object>) =>
  new Map(Object.entries(entries).map(([path, value]) => [path, Buffer.from(typeof value === 'string' ? value : JSON.stringify(value))]));
const spec = { buildCommand: null, startCommand: null, port: null };

describe('package manager', () => {
  const pkg = { scripts: { start: 'node server.js' }, dependencies: { express: '^5' } };

  it.each([
    [{ 'package-lock.json': '{}' }, {}, 'npm', 'npm ci', null],
    [{}, {}, 'npm', 'npm install --no-audit --no-fund', null],
    [{ 'pnpm-lock.yaml': "lockfileVersion: '9.0'\n" }, {}, 'pnpm', 'pnpm install --frozen-lockfile', 'pnpm@10.34.9'],
    [{ 'pnpm-lock.yaml': "lockfileVersion: '6.0'\n" }, {}, 'pnpm', 'pnpm install --frozen-lockfile', 'pnpm@8.15.9'],
    [{ 'pnpm-lock.yaml': "lockfileVersion: '9.0'\n" }, { packageManager: 'pnpm@9.12.3+sha512.abc' }, 'pnpm', 'pnpm install --frozen-lockfile', 'pnpm@9.12.3'],
    [{ 'yarn.lock': '# yarn lockfile v1\n' }, {}, 'yarn', 'yarn install --frozen-lockfile', 'yarn@1.22.22'],
    [{ 'yarn.lock': '__metadata:\n  version: 8\n' }, {}, 'yarn', 'YARN_NODE_LINKER=node-modules yarn install --immutable', '@yarnpkg/cli-dist@4.18.1'],
    [{ 'yarn.lock': '' }, { packageManager: 'yarn@4.5.0' }, 'yarn', 'YARN_NODE_LINKER=node-modules yarn install --immutable', '@yarnpkg/cli-dist@4.5.0'],
    [{ 'bun.lock': '{}' }, {}, 'bun', 'bun install --frozen-lockfile', 'bun@1.4.5'],
    [{}, { packageManager: 'pnpm@10.1.0' }, 'pnpm', 'pnpm install --no-frozen-lockfile', 'pnpm@10.1.0'],
  ])('%j with %j → %s: %s', (lockfiles, fields, name, install, tool) => {
    const plan = planBuild(files({ 'package.json': { ...pkg, ...fields }, ...lockfiles }), spec);
    expect(plan.packageManager).toMatchObject({ name, tool });
    expect(plan.install).toBe(install);
    expect(plan.packageManager?.reason).toContain(tool === null ? ': npm' : ` ${tool.split('@').at(-1)} (`);
  });

  it('says why, and prefers the lockfile packageManager names when there are two', () => {
    const plan = planBuild(
      files({ 'package.json': { ...pkg, packageManager: 'pnpm@9.0.0' }, 'package-lock.json': '{}', 'pnpm-lock.yaml': "lockfileVersion: '9.0'\n" }),
      spec,
    );
    expect(plan.packageManager?.name).toBe('pnpm');
    expect(plan.packageManager?.reason).toBe('pnpm-lock.yaml found (also package-lock.json): pnpm 9.0.0 (named by packageManager)');
    expect(planBuild(files({ 'package.json': pkg }), spec).packageManager?.reason).toMatch(/^no lockfile and no packageManager field: npm/);
  });

  it('runs scripts with the chosen manager', () => {
    const plan = planBuild(files({ 'package.json': { scripts: { build: 'vite build' }, devDependencies: { vite: '^7' } }, 'pnpm-lock.yaml': '' }), spec);
    expect(plan.build).toBe('pnpm run build');
  });
});

describe('framework table', () => {
  const project = (pkg: object, extra: Record<string, string> = {}) => planBuild(files({ 'package.json': pkg, 'package-lock.json': '{}', ...extra }), spec);
  const viteScripts = { dev: 'vite', build: 'tsc -b && vite build', preview: 'vite preview' };

  it.each([
    ['vite react', { scripts: viteScripts, dependencies: { react: '^19', 'react-dom': '^19' }, devDependencies: { vite: '^7' } }, {}, { framework: 'vite-react', kind: 'static', outputDir: 'dist', build: 'npm run build', start: null }],
    ['vite vue', { scripts: viteScripts, dependencies: { vue: '^3' }, devDependencies: { vite: '^7' } }, {}, { framework: 'vite-vue', kind: 'static', outputDir: 'dist' }],
    ['vite svelte', { scripts: viteScripts, devDependencies: { vite: '^7', svelte: '^5' } }, {}, { framework: 'vite-svelte', kind: 'static', outputDir: 'dist' }],
    ['vite vanilla', { scripts: viteScripts, devDependencies: { vite: '^7' } }, {}, { framework: 'vite', kind: 'static', outputDir: 'dist' }],
    ['create react app (its start script is the dev server)', { scripts: { start: 'react-scripts start', build: 'react-scripts build' }, dependencies: { 'react-scripts': '5' } }, {}, { framework: 'create-react-app', kind: 'static', outputDir: 'build', start: null }],
    ['next', { scripts: { build: 'next build', start: 'next start' }, dependencies: { next: '16' } }, {}, { framework: 'next', kind: 'node', outputDir: '.next', start: './node_modules/.bin/next start -p "$PORT" -H "${HOSTNAME:-127.0.0.1}"', image: 'next-standalone' }],
    ['next static export', { scripts: { build: 'next build' }, dependencies: { next: '16' } }, { 'next.config.ts': "export default { output: 'export' }" }, { framework: 'next', kind: 'static', outputDir: 'out' }],
    ['nuxt', { scripts: { build: 'nuxt build' }, dependencies: { nuxt: '4' } }, {}, { framework: 'nuxt', kind: 'node', start: 'node .output/server/index.mjs', outputDir: '.output/server/index.mjs' }],
    ['sveltekit adapter-node', { scripts: { build: 'vite build' }, devDependencies: { '@sveltejs/kit': '2', '@sveltejs/adapter-node': '5', vite: '7' } }, { 'svelte.config.js': "import adapter from '@sveltejs/adapter-node';" }, { framework: 'sveltekit', kind: 'node', start: 'node build', outputDir: 'build' }],
    ['sveltekit adapter-static', { scripts: { build: 'vite build' }, devDependencies: { '@sveltejs/kit': '2', '@sveltejs/adapter-static': '3', vite: '7' } }, { 'svelte.config.js': "import adapter from '@sveltejs/adapter-static';" }, { framework: 'sveltekit', kind: 'static', outputDir: 'build' }],
    ['sveltekit adapter-static, pages option', { scripts: { build: 'vite build' }, devDependencies: { '@sveltejs/kit': '2', '@sveltejs/adapter-static': '3', vite: '7' } }, { 'svelte.config.js': "import adapter from '@sveltejs/adapter-static';\nexport default { kit: { adapter: adapter({\n  pages: './public-site/',\n  assets: './public-site/',\n  fallback: undefined,\n}) } };" }, { framework: 'sveltekit', kind: 'static', outputDir: 'public-site' }],
    ['sveltekit adapter-static, pages leaving the project', { scripts: { build: 'vite build' }, devDependencies: { '@sveltejs/kit': '2', '@sveltejs/adapter-static': '3', vite: '7' } }, { 'svelte.config.js': "import adapter from '@sveltejs/adapter-static';\nexport default { kit: { adapter: adapter({ pages: '../elsewhere' }) } };" }, { framework: 'sveltekit', kind: 'static', outputDir: 'build' }],
    ['sveltekit adapter-auto', { scripts: { build: 'vite build' }, devDependencies: { '@sveltejs/kit': '2', '@sveltejs/adapter-auto': '6', vite: '7' } }, { 'svelte.config.js': "import adapter from '@sveltejs/adapter-auto';" }, { framework: 'sveltekit', kind: 'static', outputDir: 'build', outputHint: expect.stringMatching(/adapter-node.*adapter-static/) }],
    ['astro static', { scripts: { build: 'astro build' }, dependencies: { astro: '5' } }, {}, { framework: 'astro', kind: 'static', outputDir: 'dist' }],
    ['astro node', { scripts: { build: 'astro build' }, dependencies: { astro: '5', '@astrojs/node': '9' } }, {}, { framework: 'astro', kind: 'node', start: 'node ./dist/server/entry.mjs' }],
    ['astro node, middleware mode: the project\'s own server', { scripts: { build: 'astro build', start: 'node server.mjs' }, dependencies: { astro: '7', '@astrojs/node': '11', express: '5' } }, { 'astro.config.mjs': "export default defineConfig({ output: 'server', adapter: node({ mode: 'middleware' }) });" }, { framework: 'astro', kind: 'node', start: 'npm start', outputDir: 'dist/server/entry.mjs' }],
    ['react router 7', { scripts: { build: 'react-router build', start: 'react-router-serve ./build/server/index.js' }, dependencies: { '@react-router/serve': '7' }, devDependencies: { '@react-router/dev': '7', vite: '7' } }, {}, { framework: 'react-router', kind: 'node', outputDir: 'build/server/index.js' }],
    ['react router 7 ssr: false (SPA mode)', { scripts: { build: 'react-router build' }, devDependencies: { '@react-router/dev': '7', vite: '7' } }, { 'react-router.config.ts': 'export default {\n  ssr: false,\n} satisfies Config;' }, { framework: 'react-router', kind: 'static', outputDir: 'build/client', start: null }],
    ['remix v2 (vite)', { scripts: { build: 'remix vite:build', start: 'remix-serve ./build/server/index.js' }, dependencies: { '@remix-run/serve': '2' }, devDependencies: { '@remix-run/dev': '2', vite: '6' } }, { 'vite.config.ts': 'export default defineConfig({ plugins: [remix()] });' }, { framework: 'remix', kind: 'node', outputDir: 'build/server/index.js', start: './node_modules/.bin/remix-serve ./build/server/index.js' }],
    ['remix v2 ssr: false (SPA mode)', { scripts: { build: 'remix vite:build' }, devDependencies: { '@remix-run/dev': '2', vite: '6' } }, { 'vite.config.ts': 'export default defineConfig({ plugins: [remix({ ssr: false })] });' }, { framework: 'remix', kind: 'static', outputDir: 'build/client', start: null }],
    ['express', { scripts: { start: 'node app.js' }, dependencies: { express: '5' } }, {}, { framework: 'express', kind: 'node', start: 'npm start', build: null }],
    ['hono', { scripts: { start: 'node index.js' }, dependencies: { hono: '4', '@hono/node-server': '1' } }, {}, { framework: 'hono', kind: 'node', start: 'npm start' }],
    ['unknown with a start script', { scripts: { start: 'node s.js' } }, {}, { framework: 'node', kind: 'node', start: 'npm start' }],
    ['unknown with a build script', { scripts: { build: 'make-site' } }, {}, { framework: 'node', kind: 'static', outputDir: null, build: 'npm run build' }],
  ])('%s', (_name, pkg, extra, expected) => {
    expect(project(pkg, extra)).toMatchObject(expected);
  });

  it("lets the user's commands win", () => {
    const next = { scripts: { build: 'next build' }, dependencies: { next: '16' } };
    expect(planBuild(files({ 'package.json': next }), { ...spec, buildCommand: 'make', startCommand: 'node custom.js' })).toMatchObject({
      framework: 'next',
      kind: 'node',
      build: 'make',
      start: 'node custom.js',
      outputDir: null,
    });
  });

  it('never serves a package from its root, and refuses a server without a start script', () => {
    const plan = planBuild(files({ 'package.json': { name: 'x' }, 'index.html': '<p>' }), spec);
    expect(plan).toMatchObject({ kind: 'static', outputDir: null, outputHint: expect.stringContaining('"build" script') });
    expect(() => planBuild(files({ 'package.json': { dependencies: { express: '5' } } }), spec)).toThrow(/express server but package.json has no start script/);
    // Astro's Node adapter in middleware mode serves nothing by itself (its entry exits at once).
    const astroMiddleware = { 'astro.config.mjs': "adapter: node({ mode: 'middleware' })" };
    expect(() => planBuild(files({ 'package.json': { scripts: { build: 'astro build', start: 'astro preview' }, dependencies: { astro: '7', '@astrojs/node': '11' } }, ...astroMiddleware }), spec)).toThrow(/astro server but package.json has no start script/);
  });

  it('plans plain HTML from the root and a prebuilt site from its directory', () => {
    expect(planBuild(files({ 'index.html': '' }), spec)).toMatchObject({ framework: 'static-html', kind: 'static', outputDir: '.', install: null, packageManager: null });
    expect(planBuild(files({ 'dist/index.html': '' }), spec)).toMatchObject({ kind: 'static', outputDir: 'dist' });
  });
});

describe('generated Dockerfile', () => {
  it('installs from the manifest and lockfile before the sources, with the pinned tool', () => {
    const paths = ['package.json', 'pnpm-lock.yaml', '.npmrc', 'src/main.ts', 'index.html'];
    const plan = planBuild(files({ 'package.json': { scripts: { build: 'vite build' }, devDependencies: { vite: '7' } }, 'pnpm-lock.yaml': '', '.npmrc': '' }), spec);
    const dockerfile = generateDockerfile(plan, paths);
    const lines = dockerfile.split('\n');
    const at = (prefix: string) => lines.findIndex((line) => line.startsWith(prefix));
    expect(lines).toContain('RUN npm install --global --no-audit --no-fund pnpm@10.34.9');
    expect(lines).toContain('COPY ["package.json","pnpm-lock.yaml",".npmrc","./"]');
    expect(at('COPY ["package.json"')).toBeLessThan(at('RUN pnpm install --frozen-lockfile'));
    expect(at('RUN pnpm install')).toBeLessThan(at('COPY . .'));
    expect(at('COPY . .')).toBeLessThan(at('ENV NODE_ENV=production'));
    expect(at('ENV NODE_ENV=production')).toBeLessThan(at("RUN sh -c 'pnpm run build'"));
    expect(dockerfile).toContain('for d in \'dist\'; do');
    expect(dockerfile).toContain('BUILD_OUTPUT_MISSING');
    // The site (the output only) goes into the nginx stage of static-site.ts.
    expect(dockerfile).toContain('COPY --from=build /site /site');
    expect(installInputs(plan, [...paths, 'pnpm-workspace.yaml'])).toBeNull();
  });

  it('runs Next from its standalone output', () => {
    const plan = planBuild(files({ 'package.json': { scripts: { build: 'next build', start: 'next start' }, dependencies: { next: '16' } }, 'package-lock.json': '{}' }), spec);
    const dockerfile = generateDockerfile(plan, ['package.json', 'package-lock.json']);
    const wrap = dockerfile.split('\n').findIndex((line) => line.startsWith('RUN node --input-type=module -e '));
    expect(wrap).toBeGreaterThan(dockerfile.split('\n').indexOf('ENV NODE_ENV=production'));
    expect(wrap).toBeLessThan(dockerfile.split('\n').indexOf("RUN sh -c 'npm run build'"));
    expect(dockerfile).toContain('COPY --from=build --chown=node:node /app/.next/standalone ./');
    expect(dockerfile).toContain('ENV HOSTNAME=0.0.0.0');
    expect(dockerfile).toContain('CMD ["node", "server.js"]');
  });

  it.each([
    ['no config', {}, {}],
    ['an ESM object', { 'next.config.mjs': 'export default { reactStrictMode: true };' }, { reactStrictMode: true }],
    ['a CommonJS function', { 'next.config.js': 'module.exports = (phase) => ({ env: { PHASE: phase } });' }, { env: { PHASE: 'phase-production-build' } }],
    ['a typed TypeScript object', { 'next.config.ts': "import type { NextConfig } from 'next';\nconst nextConfig: NextConfig = { poweredByHeader: false };\nexport default nextConfig;\n" }, { poweredByHeader: false }],
  ])('makes Next write standalone output with %s (the wrapper the Dockerfile runs)', async (_name, configFiles, kept) => {
    const plan = planBuild(files({ 'package.json': { scripts: { build: 'next build' }, dependencies: { next: '16' } } }), spec);
    const line = generateDockerfile(plan, ['package.json']).split('\n').find((text) => text.startsWith('RUN node --input-type=module -e ')) ?? '';
    const dir = await mkdtemp(join(tmpdir(), 'zepid-next-config-'));
    try {
      for (const [name, text] of Object.entries(configFiles)) await writeFile(join(dir, name), text);
      // Shell form, as Docker runs a RUN line: /bin/sh -c '<rest of the line>'.
      execFileSync('/bin/sh', ['-c', line.slice('RUN '.length)], { cwd: dir, env: { PATH: process.env.PATH ?? '' } });
      const loaded = execFileSync(process.execPath, ['--input-type=module', '-e', "const c = (await import('./next.config.mjs')).default; console.log(JSON.stringify(await c('phase-production-build', {})));"], { cwd: dir, encoding: 'utf8' });
      expect(JSON.parse(loaded)).toEqual({ ...kept, output: 'standalone' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('runs a server with its start command on the port', () => {
    const plan = planBuild(files({ 'package.json': { scripts: { start: 'node s.js' } } }), { ...spec, port: 3000 });
    const dockerfile = generateDockerfile(plan, ['package.json']);
    expect(dockerfile).toContain('RUN npm install --no-audit --no-fund');
    expect(dockerfile).toContain('ENV PORT=3000');
    expect(dockerfile).toContain('CMD ["sh", "-c", "npm start"]');
    expect(dockerfile).not.toContain('npm install --global');
  });
});
