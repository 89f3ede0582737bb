import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/**
 * Real project templates, taken at test time from pinned npm packages with their own CLIs, as a
 * user would (`npm exec create-vite@… -- app --template react-ts`), then the small edits the issue
 * names (a client route, no remote fonts, an adapter). The npm cache is the caller's (CI keeps it in
 * the clone's .cache/), so a second run fetches nothing.
 */
export const PINNED = {
  createVite: 'create-vite@9.3.0',
  createNextApp: 'create-next-app@16.4.3',
  sv: 'sv@0.17.1',
  pnpm: 'pnpm@10.34.9',
  adapterNode: '^5.5.7',
  express: '5.3.0',
} as const;

export interface Toolbox {
  /** Where projects are generated. */
  dir: string;
  /** Environment of the generating commands (PATH with this Node, the npm cache). */
  env: Record<string, string>;
}

function npmExec(box: Toolbox, cwd: string, pkg: string, args: string[]): void {
  execFileSync('npm', ['exec', '--yes', `--package=${pkg}`, '--', ...args], { cwd, env: box.env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000 });
}

async function edit(path: string, change: (text: string) => string): Promise<void> {
  const before = await readFile(path, 'utf8');
  const after = change(before);
  if (after === before) throw new Error(`template changed: the edit of ${path} found nothing to change`);
  await writeFile(path, after);
}

/** create-vite react-ts, plus a client-side route (/about) without a router dependency. */
export async function viteReactTs(box: Toolbox): Promise<string> {
  npmExec(box, box.dir, PINNED.createVite, ['create-vite', 'vite-react', '--template', 'react-ts', '--no-interactive']);
  const dir = join(box.dir, 'vite-react');
  await writeFile(join(dir, 'src', 'About.tsx'), 'export default function About() {\n  return <h1>About this app</h1>\n}\n');
  await edit(join(dir, 'src', 'main.tsx'), (text) =>
    text
      .replace("import App from './App.tsx'", "import App from './App.tsx'\nimport About from './About.tsx'")
      .replace('<App />', "{window.location.pathname === '/about' ? <About /> : <App />}"),
  );
  return dir;
}

/** create-next-app (app router, JavaScript, npm), without next/font/google (no network at build), plus a pages-router page. */
export async function nextApp(box: Toolbox): Promise<string> {
  npmExec(box, box.dir, PINNED.createNextApp, [
    'create-next-app',
    'next-app',
    '--js',
    '--app',
    '--no-tailwind',
    '--no-eslint',
    '--no-src-dir',
    '--no-react-compiler',
    '--import-alias',
    '@/*',
    '--use-npm',
    '--skip-install',
    '--disable-git',
    '--yes',
  ]);
  const dir = join(box.dir, 'next-app');
  await edit(join(dir, 'app', 'layout.js'), (text) =>
    text
      .replace(/import \{[^}]*\} from "next\/font\/google";\n/, '')
      .replace(/const geist\w+ = \w+\(\{[^}]*\}\);\n/g, '')
      .replace(/ className=\{`\$\{geistSans\.variable\} \$\{geistMono\.variable\}`\}/, '')
      .replace('"Create Next App"', '"Zepid Next e2e"'),
  );
  await mkdir(join(dir, 'pages'), { recursive: true });
  await writeFile(join(dir, 'pages', 'legacy.js'), 'export default function Legacy() {\n  return <p>pages router works</p>;\n}\n');
  return dir;
}

/** `sv create` minimal TypeScript project, with adapter-node (what `sv add sveltekit-adapter` writes) or the template's adapter-auto. */
export async function svelteKit(box: Toolbox, name: string, adapter: 'node' | 'auto'): Promise<string> {
  npmExec(box, box.dir, PINNED.sv, ['sv', 'create', name, '--template', 'minimal', '--types', 'ts', '--no-add-ons', '--no-install']);
  const dir = join(box.dir, name);
  if (adapter === 'node') {
    const config = (await readdir(dir)).find((file) => /^(svelte|vite)\.config\.(js|ts)$/.test(file) && file !== 'vite.config.js') ?? 'vite.config.ts';
    await edit(join(dir, config), (text) => text.replace("'@sveltejs/adapter-auto'", "'@sveltejs/adapter-node'"));
    await edit(join(dir, 'package.json'), (text) => {
      const pkg = JSON.parse(text) as { devDependencies: Record<string, string> };
      delete pkg.devDependencies['@sveltejs/adapter-auto'];
      pkg.devDependencies['@sveltejs/adapter-node'] = PINNED.adapterNode;
      return `${JSON.stringify(pkg, null, '\t')}\n`;
    });
  }
  return dir;
}

/** create-vite vanilla with a pnpm lockfile (written by the pinned pnpm). */
export async function pnpmVite(box: Toolbox): Promise<string> {
  npmExec(box, box.dir, PINNED.createVite, ['create-vite', 'pnpm-site', '--template', 'vanilla', '--no-interactive']);
  const dir = join(box.dir, 'pnpm-site');
  npmExec(box, dir, PINNED.pnpm, ['pnpm', 'install', '--lockfile-only']);
  return dir;
}

/** Express's hello world, with a start script and a package-lock; it also says which Node runs it. */
export async function expressApp(box: Toolbox): Promise<string> {
  const dir = join(box.dir, 'express-app');
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, 'package.json'),
    `${JSON.stringify({ name: 'express-app', version: '1.0.0', private: true, scripts: { start: 'node app.js' }, dependencies: { express: PINNED.express } }, null, 2)}\n`,
  );
  await writeFile(
    join(dir, 'app.js'),
    [
      "const express = require('express')",
      'const app = express()',
      'const port = process.env.PORT || 3000',
      "app.get('/', (req, res) => res.send('Hello World!'))",
      "app.get('/version', (req, res) => res.json({ node: process.version, nodeEnv: process.env.NODE_ENV }))",
      'app.listen(port, process.env.HOST, () => console.log(`Example app listening on port ${port}`))',
      '',
    ].join('\n'),
  );
  execFileSync('npm', ['install', '--package-lock-only', '--no-audit', '--no-fund'], { cwd: dir, env: box.env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
  return dir;
}

const TEXT = /\.(html|css|js|jsx|ts|tsx|mjs|cjs|json|svelte|md|txt|svg|yaml|yml|npmrc|gitignore)$|^\.[a-z]+$/i;

/** A project directory as the `files` of POST /deploy (binary files base64), without node_modules or build output. */
export async function filesOf(root: string): Promise<{ path: string; content: string; encoding?: 'base64' }[]> {
  const files: { path: string; content: string; encoding?: 'base64' }[] = [];
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (['node_modules', '.git', '.svelte-kit', '.next', 'dist', 'build'].includes(entry.name)) continue;
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile()) {
        const data = await readFile(path);
        const name = relative(root, path);
        files.push(TEXT.test(entry.name) ? { path: name, content: data.toString('utf8') } : { path: name, content: data.toString('base64'), encoding: 'base64' });
      }
    }
  };
  await walk(root);
  return files;
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}
