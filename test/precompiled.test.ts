import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { SERVICE_NODE_FLAGS } from '../scripts/node-flags.ts';
import { CACHE_DIR, precompile, ROOT } from '../scripts/precompiled.mjs';

const AMARO = 'internal/deps/amaro';
// Prints what the process is: the module's own value, whether Node's stripper was loaded, where a stack points.
const PROBE = `const n: number = 1;
const stripperLoaded: boolean = process.moduleLoadList.some((entry) => entry.includes('${AMARO}'));
const at: string = new Error('where').stack?.split('\\n')[1] ?? '';
console.log(JSON.stringify({ n, stripperLoaded, at }));
`;

describe('precompiled sources (scripts/precompiled.mjs)', () => {
  let root = '';
  afterEach(() => {
    if (root !== '') rmSync(root, { recursive: true, force: true });
    root = '';
  });

  const write = (path: string, content: string) => {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
  };
  /** Runs a module of the temporary project with the hook installed for that project. */
  const run = (entry: string) => {
    const hook = `import { register } from ${JSON.stringify(pathToFileURL(join(ROOT, 'scripts', 'precompiled.mjs')).href)}; register({ root: ${JSON.stringify(root)} });`;
    const out = execFileSync(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(hook)}`, join(root, entry)], { encoding: 'utf8' });
    return JSON.parse(out) as { n: number; stripperLoaded: boolean; at: string };
  };

  it('strips the services\' sources and scripts once, never tests, and drops entries of changed files', () => {
    root = mkdtempSync(join(tmpdir(), 'zepid-precompiled-'));
    write('apps/demo/src/main.ts', PROBE);
    write('packages/lib/src/index.ts', 'export const x: number = 1;\n');
    write('packages/lib/test/index.test.ts', 'export const y: number = 2;\n');
    write('scripts/tool.ts', 'export const z: string = "z";\n');
    expect(precompile({ root })).toMatchObject({ compiled: 3, reused: 0, removed: 0 });
    expect(precompile({ root })).toMatchObject({ compiled: 0, reused: 3, removed: 0 });
    const cached = readdirSync(join(root, CACHE_DIR)).map((name) => readFileSync(join(root, CACHE_DIR, name), 'utf8'));
    // Types become blanks: the same lines, the same columns.
    expect(cached).toContain('export const x         = 1;\n');
    write('packages/lib/src/index.ts', 'export const x: number = 2;\n');
    expect(precompile({ root })).toMatchObject({ compiled: 1, reused: 2, removed: 1 });
  });

  it('serves a module from the cache without loading Node\'s stripper, keeps its URL and lines, and leaves an edited one to Node', () => {
    root = mkdtempSync(join(tmpdir(), 'zepid-precompiled-'));
    write('package.json', '{ "type": "module" }\n');
    write('apps/demo/src/main.ts', PROBE);
    // Control: without the cache, Node strips the module itself.
    expect(run('apps/demo/src/main.ts')).toMatchObject({ n: 1, stripperLoaded: true });
    precompile({ root });
    const served = run('apps/demo/src/main.ts');
    expect(served).toMatchObject({ n: 1, stripperLoaded: false });
    expect(served.at).toContain(`${pathToFileURL(join(root, 'apps/demo/src/main.ts')).href}:3:`);
    // Edited after the precompile: never the stale entry; Node strips the new source.
    write('apps/demo/src/main.ts', PROBE.replace('const n: number = 1', 'const n: number = 2'));
    expect(run('apps/demo/src/main.ts')).toMatchObject({ n: 2, stripperLoaded: true });
  });

  it('loads the API\'s and the worker\'s whole module graphs from the cache with the services\' flags', () => {
    precompile();
    const probe = `await import('./apps/api/src/app.ts'); await import('./apps/worker/src/wiring.ts');
      console.log(JSON.stringify(process.moduleLoadList.filter((entry) => entry.includes('${AMARO}'))));`;
    const out = execFileSync(process.execPath, [...SERVICE_NODE_FLAGS, '--input-type=module', '--eval', probe], { cwd: ROOT, encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual([]);
  });

  it('serves only modules of "type": "module" packages, as the hook assumes', () => {
    const manifests = ['package.json', ...['apps', 'packages'].flatMap((group) => readdirSync(join(ROOT, group)).map((name) => join(group, name, 'package.json')))];
    for (const manifest of manifests) {
      expect((JSON.parse(readFileSync(join(ROOT, manifest), 'utf8')) as { type?: string }).type, manifest).toBe('module');
    }
  });
});
