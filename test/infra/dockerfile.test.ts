import { DockerfileParser } from 'dockerfile-ast';
import dockerfileUtils from 'dockerfile-utils';
import { describe, expect, it } from 'vitest';
import { generateDockerfile, planBuild } from '../../packages/core/src/index.ts';
import { SERVICE_NODE_FLAGS } from '../../scripts/node-flags.ts';
import { readRepoFile, repoFileExists } from './repo-files.ts';

// No Docker engine here: the Dockerfile is linted with dockerfile-utils (every optional rule turned
// up to an error) and its stages are checked as text; ci.yml builds both targets for real.

const { validate } = dockerfileUtils;

// ValidationSeverity.ERROR (a const enum in the typings, so spelled out).
const ERROR = 2;
const STRICT = {
  deprecatedMaintainer: ERROR,
  directiveCasing: ERROR,
  emptyContinuationLine: ERROR,
  instructionCasing: ERROR,
  instructionCmdMultiple: ERROR,
  instructionEntrypointMultiple: ERROR,
  instructionHealthcheckMultiple: ERROR,
  instructionJSONInSingleQuotes: ERROR,
  instructionWorkdirRelative: ERROR,
};

const dockerfile = () => readRepoFile('Dockerfile');

/** Each stage's name and instructions, joined continuation lines. */
function stages(text: string): { name: string; from: string; lines: string[] }[] {
  const result: { name: string; from: string; lines: string[] }[] = [];
  const logical = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  for (const line of logical) {
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from?.[1] !== undefined) result.push({ name: from[2] ?? '', from: from[1], lines: [] });
    else result.at(-1)?.lines.push(line);
  }
  return result;
}

/** A stage and the stages it is built FROM, nearest first. */
function chain(all: ReturnType<typeof stages>, name: string): ReturnType<typeof stages> {
  const stage = all.find((s) => s.name === name);
  if (stage === undefined) return [];
  return [stage, ...chain(all, stage.from)];
}

describe('Dockerfile', () => {
  it('has no lint errors or warnings', () => {
    expect(validate(dockerfile(), STRICT).map((d) => `${d.range.start.line + 1}: ${typeof d.message === 'string' ? d.message : d.message.value}`)).toEqual([]);
  });

  it('the linter does catch mistakes (self-check)', () => {
    expect(validate('FROM node:24-slim\nworkdir app\nCMD ["a"]\nCMD ["b"]\nEXPOSE abc\n', STRICT).length).toBeGreaterThanOrEqual(3);
  });

  it('has the api and worker targets, on Node 24 slim', () => {
    const all = stages(dockerfile());
    expect(all.map((s) => s.name)).toEqual(expect.arrayContaining(['api', 'worker']));
    expect(dockerfile()).toMatch(/^ARG NODE_IMAGE=node:24-[a-z]+-slim$/m);
  });

  it.each(['api', 'worker'])('%s: production dependencies only, non-root, tini as PID 1, a healthcheck, an existing entry file', (target) => {
    const all = stages(dockerfile());
    const lines = chain(all, target).flatMap((s) => s.lines);
    const deps = all.find((s) => s.name === 'deps');
    expect(deps?.lines.join('\n')).toMatch(/npm ci --omit=dev/);
    expect(lines).toContain('USER node');
    expect(lines).toContain('ENTRYPOINT ["/usr/bin/tini", "--"]');
    expect(all.find((s) => s.name === 'base')?.lines.join('\n')).toMatch(/apt-get install .*\btini\b/);
    const own = all.find((s) => s.name === target)?.lines ?? [];
    expect(own.some((line) => /^HEALTHCHECK .*CMD \["node", "-e", "fetch\(/.test(line))).toBe(true);
    const cmd = own.find((line) => line.startsWith('CMD '));
    const argv = JSON.parse(cmd?.slice('CMD '.length) ?? '[]') as string[];
    const entry = argv.at(-1);
    expect(argv[0]).toBe('node');
    // The images run the services with the V8 flags `npm start` uses (scripts/node-flags.ts).
    expect(argv.slice(1, -1)).toEqual([...SERVICE_NODE_FLAGS]);
    expect(entry).toBe(target === 'api' ? 'apps/api/src/server.ts' : 'apps/worker/src/main.ts');
    expect(repoFileExists(entry ?? '')).toBe(true);
    // The loader the flags name is copied in, and the sources are precompiled after they are.
    const loader = SERVICE_NODE_FLAGS.find((flag) => flag.startsWith('--import='))?.slice('--import=./'.length) ?? '';
    const copies = lines.filter((line) => line.startsWith('COPY '));
    expect(copies.some((line) => line.split(/\s+/).includes(loader) && line.includes('scripts/precompiled.mjs'))).toBe(true);
    const runtime = all.find((s) => s.name === 'runtime')?.lines ?? [];
    const precompileAt = runtime.findIndex((line) => /^RUN node scripts\/precompiled\.mjs\b/.test(line));
    expect(precompileAt).toBeGreaterThan(runtime.findIndex((line) => line.startsWith('COPY apps/')));
    expect(precompileAt).toBeGreaterThan(runtime.findIndex((line) => line.startsWith('COPY packages/')));
  });

  it('.dockerignore keeps dependencies, git history and local secrets out of the build context', () => {
    const ignored = readRepoFile('.dockerignore').split('\n').map((line) => line.trim());
    for (const entry of ['**/node_modules', '.git', '.env', '.data']) expect(ignored).toContain(entry);
  });
});

describe('generated Dockerfiles (sources without one, built by kaniko in Azure)', () => {
  const files = (entries: Record<string, unknown>) =>
    new Map(Object.entries(entries).map(([path, value]) => [path, Buffer.from(typeof value === 'string' ? value : JSON.stringify(value))]));
  const spec = { buildCommand: null, startCommand: null, port: null };
  const projects: Record<string, Record<string, unknown>> = {
    'plain HTML': { 'index.html': '<h1>hi</h1>' },
    'vite (pnpm)': { 'package.json': { scripts: { build: 'vite build' }, devDependencies: { vite: '7' } }, 'pnpm-lock.yaml': "lockfileVersion: '9.0'" },
    'next (npm)': { 'package.json': { scripts: { build: 'next build', start: 'next start' }, dependencies: { next: '16' } }, 'package-lock.json': '{}' },
    'sveltekit adapter-node (yarn berry)': {
      'package.json': { scripts: { build: 'vite build' }, devDependencies: { '@sveltejs/kit': '2', '@sveltejs/adapter-node': '5' } },
      'yarn.lock': '__metadata:\n',
      '.yarnrc.yml': 'nodeLinker: node-modules',
    },
    'express (bun)': { 'package.json': { scripts: { start: 'node app.js' }, dependencies: { express: '5' } }, 'bun.lock': '{}' },
    'unknown static (workspaces)': { 'package.json': { scripts: { build: 'make' } }, 'pnpm-workspace.yaml': 'packages: []', 'pnpm-lock.yaml': '' },
  };

  it.each(Object.entries(projects))('%s: passes the strict lint, NODE_ENV=production before the build', (_name, entries) => {
    const source = files(entries);
    const text = generateDockerfile(planBuild(source, spec), [...source.keys()]);
    expect(validate(text, STRICT).map((problem) => `${problem.range.start.line + 1}: ${typeof problem.message === 'string' ? problem.message : problem.message.value}`)).toEqual([]);
    const lines = text.split('\n');
    const build = lines.findIndex((line) => line.startsWith("RUN sh -c '"));
    if (build !== -1) expect(lines.findIndex((line) => line === 'ENV NODE_ENV=production')).toBeLessThan(build);
  });
});

describe('generated Dockerfiles keep the install in a layer kaniko can cache', () => {
  const spec = { buildCommand: null, startCommand: null, port: null };
  const vite = (main: string) =>
    new Map(
      Object.entries({
        'package.json': JSON.stringify({ scripts: { build: 'vite build' }, devDependencies: { vite: '7' } }),
        'package-lock.json': '{"lockfileVersion":3}',
        '.npmrc': 'fund=false',
        'index.html': '<script type="module" src="/src/main.ts"></script>',
        'src/main.ts': main,
      }).map(([path, text]) => [path, Buffer.from(text)]),
    );

  /** Parsed by dockerfile-ast (dockerfile-utils' parser): each instruction's keyword and arguments. */
  const instructions = (text: string) => DockerfileParser.parse(text).getInstructions().map((instruction) => ({ keyword: instruction.getKeyword(), args: instruction.getArgumentsContent() ?? '' }));

  it('copies only the manifest, lockfile and install configs before the install, and the sources after it', () => {
    const source = vite('console.log(1)');
    const text = generateDockerfile(planBuild(source, spec), [...source.keys()]);
    expect(validate(text, STRICT)).toEqual([]);
    const steps = instructions(text);
    const install = steps.findIndex((step) => step.keyword === 'RUN' && step.args === 'npm ci');
    expect(install).toBeGreaterThan(0);
    const copiesBefore = steps.slice(0, install).filter((step) => step.keyword === 'COPY' || step.keyword === 'ADD');
    expect(copiesBefore.map((step) => step.args)).toEqual(['["package.json","package-lock.json",".npmrc","./"]']);
    const sources = steps.findIndex((step) => step.keyword === 'COPY' && step.args === '. .');
    expect(sources).toBeGreaterThan(install);
    const build = steps.findIndex((step) => step.keyword === 'RUN' && step.args.includes('npm run build'));
    expect(build).toBeGreaterThan(sources);
  });

  it('a changed source file changes no instruction up to the install (kaniko keys a layer on its instruction and the files it copies)', () => {
    const before = instructions(generateDockerfile(planBuild(vite('console.log(1)'), spec), [...vite('').keys()]));
    const after = instructions(generateDockerfile(planBuild(vite('console.log(2)'), spec), [...vite('').keys()]));
    const install = before.findIndex((step) => step.keyword === 'RUN' && step.args === 'npm ci');
    expect(after.slice(0, install + 1)).toEqual(before.slice(0, install + 1));
  });
});

/**
 * The five variants issue 10 deploys end to end locally (test/e2e/frameworks.test.ts), as their
 * generated Dockerfile builds them in Azure: their package.json and config as the e2e templates
 * write them (test/e2e/templates.ts), parsed with dockerfile-ast.
 */
describe('generated Dockerfiles for the framework variants: the right output and start command', () => {
  const spec = { buildCommand: null, startCommand: null, port: null };
  const source = (entries: Record<string, unknown>) =>
    new Map(Object.entries({ 'package-lock.json': '{"lockfileVersion":3}', ...entries }).map(([path, value]) => [path, Buffer.from(typeof value === 'string' ? value : JSON.stringify(value))]));
  const instructions = (text: string) => DockerfileParser.parse(text).getInstructions().map((instruction) => ({ keyword: instruction.getKeyword(), args: instruction.getArgumentsContent() ?? '' }));
  const reactRouter = (ssr: boolean) => ({
    'package.json': {
      scripts: { build: 'react-router build', start: 'react-router-serve ./build/server/index.js' },
      dependencies: { '@react-router/node': '7.18.7', '@react-router/serve': '7.18.7', react: '^19', 'react-dom': '^19', 'react-router': '7.18.7' },
      devDependencies: { '@react-router/dev': '7.18.7', vite: '^7' },
    },
    'react-router.config.ts': `import type { Config } from "@react-router/dev/config";\n\nexport default {\n  ssr: ${String(ssr)},\n} satisfies Config;\n`,
  });
  const apps: Record<string, { files: Record<string, unknown>; outputDir: string; start: string }> = {
    'Astro with @astrojs/node': {
      files: {
        'package.json': { scripts: { build: 'astro build' }, dependencies: { astro: '7.4.8', '@astrojs/node': '11.1.6' } },
        'astro.config.mjs': "import { defineConfig } from 'astro/config';\nimport node from '@astrojs/node';\n\nexport default defineConfig({\n  output: 'server',\n  adapter: node({ mode: 'standalone' }),\n});\n",
      },
      outputDir: 'dist/server/entry.mjs',
      start: 'node ./dist/server/entry.mjs',
    },
    'Remix v2 (Vite)': {
      files: {
        'package.json': {
          scripts: { build: 'remix vite:build', start: 'remix-serve ./build/server/index.js' },
          dependencies: { '@remix-run/node': '2.17.5', '@remix-run/react': '2.17.5', '@remix-run/serve': '2.17.5' },
          devDependencies: { '@remix-run/dev': '2.17.5', vite: '^6' },
        },
        'vite.config.ts': 'import { vitePlugin as remix } from "@remix-run/dev";\nimport { defineConfig } from "vite";\n\nexport default defineConfig({ plugins: [remix()] });\n',
      },
      outputDir: 'build/server/index.js',
      start: './node_modules/.bin/remix-serve ./build/server/index.js',
    },
  };
  const sites: Record<string, { files: Record<string, unknown>; outputDir: string }> = {
    'React Router 7 with ssr: false': { files: reactRouter(false), outputDir: 'build/client' },
    'SvelteKit with adapter-static': {
      files: {
        'package.json': { scripts: { build: 'vite build' }, devDependencies: { '@sveltejs/adapter-static': '^3.0.10', '@sveltejs/kit': '^2.63.0', vite: '^8' } },
        'vite.config.ts': "import adapter from '@sveltejs/adapter-static';\nimport { sveltekit } from '@sveltejs/kit/vite';\nimport { defineConfig } from 'vite';\n\nexport default defineConfig({ plugins: [sveltekit({ adapter: adapter() })] });\n",
      },
      outputDir: 'build',
    },
    "Next.js output: 'export'": {
      files: {
        'package.json': { scripts: { build: 'next build', start: 'next start' }, dependencies: { next: '16.4.3', react: '19.3.0', 'react-dom': '19.3.0' } },
        'next.config.mjs': "/** @type {import('next').NextConfig} */\nconst nextConfig = {\n  output: 'export',\n};\n\nexport default nextConfig;\n",
      },
      outputDir: 'out',
    },
  };

  const generated = (files: Record<string, unknown>) => {
    const map = source(files);
    const text = generateDockerfile(planBuild(map, spec), [...map.keys()]);
    expect(validate(text, STRICT).map((problem) => `${problem.range.start.line + 1}: ${typeof problem.message === 'string' ? problem.message : problem.message.value}`)).toEqual([]);
    return Object.assign(instructions(text), { text });
  };

  it.each(Object.entries(apps))('%s: one Node stage that checks the server build and runs its start command on $PORT', (_name, app) => {
    const steps = generated(app.files);
    expect(steps.filter((step) => step.keyword === 'FROM')).toHaveLength(1);
    const build = steps.findIndex((step) => step.keyword === 'RUN' && step.args === "sh -c 'npm run build'");
    const check = steps.findIndex((step) => step.keyword === 'RUN' && step.args.startsWith(`test -e '${app.outputDir}' ||`));
    expect(build).toBeGreaterThan(steps.findIndex((step) => step.keyword === 'RUN' && step.args === 'npm ci'));
    expect(check).toBeGreaterThan(build);
    expect(steps).toContainEqual({ keyword: 'ENV', args: 'HOST=0.0.0.0' });
    expect(steps).toContainEqual({ keyword: 'ENV', args: 'PORT=8080' });
    expect(steps.at(-1)).toEqual({ keyword: 'CMD', args: JSON.stringify(['sh', '-c', app.start]).replace(/,/g, ', ') });
    expect(steps.some((step) => step.args.includes('/site'))).toBe(false);
  });

  it.each(Object.entries(sites))('%s: the build output only, copied from %s into nginx', (_name, site) => {
    const steps = generated(site.files);
    const froms = steps.filter((step) => step.keyword === 'FROM').map((step) => step.args);
    expect(froms).toHaveLength(2);
    const copy = steps.find((step) => step.keyword === 'RUN' && step.args.startsWith('mkdir /site'));
    expect(copy?.args).toContain(`for d in '${site.outputDir}'; do if [ -f "$d/index.html" ]`);
    // dockerfile-ast leaves COPY's flags out of the arguments: the stage it copies from, in the text.
    expect(steps).toContainEqual({ keyword: 'COPY', args: '/site /site' });
    expect(steps.text).toMatch(/^COPY --from=build \/site \/site$/m);
    // No server of the framework's: not Next's standalone wrapper, no start command of the project.
    expect(steps.some((step) => step.args.includes('next.config.user') || step.args.includes('next start') || step.args.includes('react-router-serve'))).toBe(false);
    expect(steps.at(-1)?.args).toContain('exec nginx -c /etc/zepid/nginx.conf');
  });

  it('React Router with ssr: true, for contrast, runs react-router-serve', () => {
    const steps = generated(reactRouter(true));
    expect(steps.at(-1)).toEqual({ keyword: 'CMD', args: '["sh", "-c", "./node_modules/.bin/react-router-serve ./build/server/index.js"]' });
  });
});
