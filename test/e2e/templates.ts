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
  // The templates below whose CLI downloads its files from GitHub at creation time (create-astro,
  // create-nuxt / nuxi init, create-react-router: their npm tarballs carry no template, checked
  // with `npm pack`) are written from the framework's own documented minimal setup instead, with
  // the framework itself pinned here. CRA's template does come from npm (cra-template).
  astro: '7.4.8',
  nuxt: '4.6.4',
  nuxtVite: '~8.3.5',
  reactRouter: '7.18.7',
  craTemplate: 'cra-template@1.3.0',
  reactScripts: '5.0.1',
  yarnClassic: 'yarn@1.22.22',
  yarnBerry: '@yarnpkg/cli-dist@4.18.1',
  bun: 'bun@1.4.5',
  // The variants below: the same creators and layouts as above, switched to the output the docs give.
  astroNode: '11.1.6',
  // Remix v2 classic, as the last `create-remix` template (remix-run/remix, templates/remix) lays it
  // out: Vite plugin, remix-serve; React 18 and Vite 6 are what @remix-run/dev 2.17 accepts.
  remix: '2.17.5',
  remixVite: '^6',
  // Servers with a start script: Fastify from its own generator (`fastify generate`, whose npm
  // package carries the template); Koa from the "Hello Koa" app in its npm package's Readme.md;
  // Hono from create-hono's `nodejs` template, which create-hono downloads from GitHub
  // (honojs/starter, templates/nodejs) at creation time: written here as that template is, with
  // hono and @hono/node-server pinned.
  fastifyCli: 'fastify-cli@8.0.2',
  koa: 'koa@3.3.0',
  hono: '4.13.23',
  honoNodeServer: '2.1.11',
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

/**
 * create-vite's Vue or Svelte TypeScript template as it comes (`npm create vite -- --template vue-ts`):
 * a static single-page app built into dist/, with fingerprinted assets under dist/assets/.
 */
export async function viteTemplate(box: Toolbox, template: 'vue-ts' | 'svelte-ts'): Promise<string> {
  const name = `vite-${template}`;
  npmExec(box, box.dir, PINNED.createVite, ['create-vite', name, '--template', template, '--no-interactive']);
  return join(box.dir, name);
}

/** create-next-app (app router, JavaScript, npm) into `name`, without next/font/google (no network at build), titled `title`. */
async function createNextApp(box: Toolbox, name: string, title: string): Promise<string> {
  npmExec(box, box.dir, PINNED.createNextApp, [
    'create-next-app',
    name,
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
  const dir = join(box.dir, name);
  await edit(join(dir, 'app', 'layout.js'), (text) =>
    text
      .replace(/import \{[^}]*\} from "next\/font\/google";\n/, '')
      .replace(/const geist\w+ = \w+\(\{[^}]*\}\);\n/g, '')
      .replace(/ className=\{`\$\{geistSans\.variable\} \$\{geistMono\.variable\}`\}/, '')
      .replace('"Create Next App"', JSON.stringify(title)),
  );
  return dir;
}

/** create-next-app's project plus a pages-router page. */
export async function nextApp(box: Toolbox): Promise<string> {
  const dir = await createNextApp(box, 'next-app', 'Zepid Next e2e');
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

/** create-vite vanilla with a yarn.lock: classic (yarn 1, written by an install) or berry (yarn 4, lockfile only). */
export async function yarnVite(box: Toolbox, flavour: 'classic' | 'berry'): Promise<string> {
  const name = `yarn-${flavour}-site`;
  npmExec(box, box.dir, PINNED.createVite, ['create-vite', name, '--template', 'vanilla', '--no-interactive']);
  const dir = join(box.dir, name);
  if (flavour === 'classic') {
    npmExec(box, dir, PINNED.yarnClassic, ['yarn', 'install', '--ignore-scripts', '--non-interactive', '--no-progress']);
  } else {
    // An empty yarn.lock makes the folder a project of its own (yarn 4 looks for one upwards).
    await writeFile(join(dir, 'yarn.lock'), '');
    npmExec(box, dir, PINNED.yarnBerry, ['yarn', 'install', '--mode=update-lockfile']);
  }
  if (flavour === 'berry') {
    // What Cloudflare Pages / Netlify users ship in public/ (Vite copies it into dist/).
    await writeFile(join(dir, 'public', '_redirects'), '/home / 301\n/legacy/* /:splat 302\n/old /new 410\n');
    await writeFile(join(dir, 'public', '_headers'), '/*\n  X-Frame-Options: DENY\n');
  }
  // What the lockfile's install left: not part of a project's sources (.gitignore'd by yarn's docs).
  await rm(join(dir, 'node_modules'), { recursive: true, force: true });
  await rm(join(dir, '.yarn'), { recursive: true, force: true });
  return dir;
}

/** create-vite vanilla with a bun.lock written by the pinned bun (its npm package carries the binary). */
export async function bunVite(box: Toolbox): Promise<string> {
  npmExec(box, box.dir, PINNED.createVite, ['create-vite', 'bun-site', '--template', 'vanilla', '--no-interactive']);
  const dir = join(box.dir, 'bun-site');
  npmExec(box, dir, PINNED.bun, ['bun', 'install', '--lockfile-only']);
  return dir;
}

async function writeTree(dir: string, files: Record<string, string>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(dir, path, '..'), { recursive: true });
    await writeFile(join(dir, path), content);
  }
}

const packageJson = (name: string, fields: Record<string, unknown>) => `${JSON.stringify({ name, version: '0.0.0', private: true, type: 'module', ...fields }, null, 2)}\n`;

/**
 * A static Astro site as Astro's docs set one up by hand ("Install and set up Astro" → manual
 * setup: astro as the only dependency, the build script, src/pages/), with a second page and a 404 page.
 */
export async function astroSite(box: Toolbox, name = 'astro-site'): Promise<string> {
  const dir = join(box.dir, name);
  await writeTree(dir, {
    'package.json': packageJson(name, { scripts: { dev: 'astro dev', build: 'astro build', preview: 'astro preview' }, dependencies: { astro: PINNED.astro } }),
    'astro.config.mjs': "import { defineConfig } from 'astro/config';\n\nexport default defineConfig({});\n",
    'src/pages/index.astro': '---\nconst title = "Zepid Astro e2e";\n---\n<html lang="en">\n  <head><meta charset="utf-8" /><title>{title}</title></head>\n  <body><h1>{title}</h1><a href="/about/">About</a></body>\n</html>\n',
    'src/pages/about.astro': '<html lang="en">\n  <head><meta charset="utf-8" /><title>About</title></head>\n  <body><h1>About this Astro site</h1></body>\n</html>\n',
    'src/pages/404.astro': '<html lang="en">\n  <head><meta charset="utf-8" /><title>Not found</title></head>\n  <body><h1>Astro says: no such page</h1></body>\n</html>\n',
  });
  return dir;
}

/**
 * A Nuxt 4 app as Nuxt's docs lay one out (app/app.vue with <NuxtPage />, app/pages/ for file
 * routes, nuxt.config.ts; the starter's scripts), with an /about page.
 */
export async function nuxtApp(box: Toolbox): Promise<string> {
  const dir = join(box.dir, 'nuxt-app');
  await writeTree(dir, {
    'package.json': packageJson('nuxt-app', {
      scripts: { build: 'nuxt build', dev: 'nuxt dev', generate: 'nuxt generate', preview: 'nuxt preview', postinstall: 'nuxt prepare' },
      dependencies: { nuxt: PINNED.nuxt, vue: '^3.5.44', 'vue-router': '^5.4.0' },
      // Without it the build fails today (nuxt 4.5 and 4.6 alike): Vite 8.4 bundles with rolldown
      // 1.3 while @nuxt/vite-builder brings rolldown 1.2, and the server build stops with
      // EXTERNAL_MODULES_CANNOT_BE_TRANSFORMED_TO_MODULES on unctx. Vite 8.3 shares rolldown 1.2.
      overrides: { vite: PINNED.nuxtVite },
    }),
    'nuxt.config.ts': "export default defineNuxtConfig({\n  compatibilityDate: '2025-07-15',\n  devtools: { enabled: false },\n});\n",
    'app/app.vue': '<template>\n  <div>\n    <NuxtRouteAnnouncer />\n    <NuxtPage />\n  </div>\n</template>\n',
    'app/pages/index.vue': '<template>\n  <h1>Zepid Nuxt e2e</h1>\n  <NuxtLink to="/about">About</NuxtLink>\n</template>\n',
    'app/pages/about.vue': '<script setup lang="ts">\nconst rendered = import.meta.server ? "on the server" : "in the browser";\n</script>\n<template>\n  <h1>About this Nuxt app, rendered {{ rendered }}</h1>\n</template>\n',
  });
  return dir;
}

/** app/root.tsx of create-react-router's and create-remix's templates: the document Layout and an Outlet, components from `from`. */
const rootRoute = (from: string) =>
  [
    `import { Links, Meta, Outlet, Scripts, ScrollRestoration } from "${from}";`,
    '',
    'export function Layout({ children }: { children: React.ReactNode }) {',
    '  return (',
    '    <html lang="en">',
    '      <head>',
    '        <meta charSet="utf-8" />',
    '        <Meta />',
    '        <Links />',
    '      </head>',
    '      <body>',
    '        {children}',
    '        <ScrollRestoration />',
    '        <Scripts />',
    '      </body>',
    '    </html>',
    '  );',
    '}',
    '',
    'export default function App() {',
    '  return <Outlet />;',
    '}',
    '',
  ].join('\n');

/**
 * React Router 7 in framework mode, laid out as create-react-router's default template is
 * (react-router.config.ts, vite.config.ts with the reactRouter plugin, app/root.tsx, app/routes.ts,
 * start script `react-router-serve ./build/server/index.js`), without Tailwind; with an /about route.
 */
export async function reactRouterApp(box: Toolbox, name = 'react-router-app'): Promise<string> {
  const dir = join(box.dir, name);
  const v = PINNED.reactRouter;
  await writeTree(dir, {
    'package.json': packageJson(name, {
      scripts: { build: 'react-router build', dev: 'react-router dev', start: 'react-router-serve ./build/server/index.js' },
      dependencies: { '@react-router/node': v, '@react-router/serve': v, isbot: '^5', react: '^19', 'react-dom': '^19', 'react-router': v },
      devDependencies: { '@react-router/dev': v, vite: '^7' },
    }),
    'react-router.config.ts': 'import type { Config } from "@react-router/dev/config";\n\nexport default {\n  ssr: true,\n} satisfies Config;\n',
    'vite.config.ts': 'import { reactRouter } from "@react-router/dev/vite";\nimport { defineConfig } from "vite";\n\nexport default defineConfig({\n  plugins: [reactRouter()],\n});\n',
    'app/root.tsx': rootRoute('react-router'),
    'app/routes.ts': 'import { type RouteConfig, index, route } from "@react-router/dev/routes";\n\nexport default [index("routes/home.tsx"), route("about", "routes/about.tsx")] satisfies RouteConfig;\n',
    'app/routes/home.tsx': 'export function meta() {\n  return [{ title: "Zepid React Router e2e" }];\n}\n\nexport default function Home() {\n  return <h1>Welcome to React Router</h1>;\n}\n',
    'app/routes/about.tsx': 'export function loader() {\n  return { node: process.version };\n}\n\nexport default function About({ loaderData }: { loaderData: { node: string } }) {\n  return <h1>About, served by Node {loaderData.node}</h1>;\n}\n',
  });
  return dir;
}

/**
 * Create React App as create-react-app writes it: cra-template's files (from npm) and the
 * package.json create-react-app generates (react-scripts, the template's dependencies, scripts,
 * eslintConfig and browserslist).
 */
export async function craApp(box: Toolbox): Promise<string> {
  const dir = join(box.dir, 'cra-app');
  await mkdir(dir, { recursive: true });
  execFileSync('npm', ['pack', PINNED.craTemplate, '--silent', '--pack-destination', box.dir], { cwd: box.dir, env: box.env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
  const tarball = join(box.dir, `${PINNED.craTemplate.replace('@', '-')}.tgz`);
  execFileSync('tar', ['xzf', tarball, '-C', dir, '--strip-components=2', 'package/template'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const templateJson = execFileSync('tar', ['xzOf', tarball, 'package/template.json']).toString('utf8');
  const template = (JSON.parse(templateJson) as { package: { dependencies: Record<string, string>; eslintConfig: unknown } }).package;
  await writeFile(
    join(dir, 'package.json'),
    packageJson('cra-app', {
      type: undefined,
      version: '0.1.0',
      dependencies: { react: '^19', 'react-dom': '^19', 'react-scripts': PINNED.reactScripts, ...template.dependencies },
      scripts: { start: 'react-scripts start', build: 'react-scripts build', test: 'react-scripts test', eject: 'react-scripts eject' },
      eslintConfig: template.eslintConfig,
      browserslist: { production: ['>0.2%', 'not dead', 'not op_mini all'], development: ['last 1 chrome version', 'last 1 firefox version', 'last 1 safari version'] },
    }),
  );
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

/**
 * `fastify generate` (fastify-cli's own template: app.js with @fastify/autoload, plugins/, routes/,
 * start script `fastify start -l info app.js`, which listens on PORT), plus one route in routes/
 * (autoloaded) that says which Node runs it and with which NODE_ENV; a package-lock as `npm install` writes.
 */
export async function fastifyApp(box: Toolbox): Promise<string> {
  npmExec(box, box.dir, PINNED.fastifyCli, ['fastify', 'generate', 'fastify-app']);
  const dir = join(box.dir, 'fastify-app');
  await writeTree(dir, {
    'routes/version/index.js': "'use strict'\n\nmodule.exports = async function (fastify, opts) {\n  fastify.get('/', async function () {\n    return { node: process.version, nodeEnv: process.env.NODE_ENV }\n  })\n}\n",
  });
  lockfile(box, dir);
  return dir;
}

function lockfile(box: Toolbox, dir: string): void {
  execFileSync('npm', ['install', '--package-lock-only', '--no-audit', '--no-fund'], { cwd: dir, env: box.env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
}

/**
 * Koa's "Hello Koa" app, taken from the Readme.md of the pinned koa package (it listens on 3000),
 * with a start script and a package-lock. `fixed`: the change the service's failure message asks for
 * (listen on process.env.PORT and HOST), and a /version middleware.
 */
export async function koaApp(box: Toolbox, fixed: boolean): Promise<string> {
  const dir = join(box.dir, fixed ? 'koa-app-fixed' : 'koa-app');
  await mkdir(dir, { recursive: true });
  execFileSync('npm', ['pack', PINNED.koa, '--silent', '--pack-destination', box.dir], { cwd: box.dir, env: box.env, stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
  const readme = execFileSync('tar', ['xzOf', join(box.dir, `${PINNED.koa.replace('@', '-')}.tgz`), 'package/Readme.md']).toString('utf8');
  const hello = /## Hello Koa\s+```js\n([\s\S]*?)```/.exec(readme)?.[1];
  if (hello === undefined) throw new Error(`template changed: no "Hello Koa" app in ${PINNED.koa}'s Readme.md`);
  const [, version] = PINNED.koa.split('@');
  await writeFile(join(dir, 'package.json'), `${JSON.stringify({ name: 'koa-app', version: '1.0.0', private: true, scripts: { start: 'node app.js' }, dependencies: { koa: version } }, null, 2)}\n`);
  await writeFile(join(dir, 'app.js'), hello);
  if (fixed) {
    await edit(join(dir, 'app.js'), (text) =>
      text
        .replace('app.listen(3000);', 'app.listen(process.env.PORT, process.env.HOST);')
        .replace('// response', "app.use((ctx, next) => (ctx.path === '/version' ? (ctx.body = { node: process.version, nodeEnv: process.env.NODE_ENV }) : next()));\n\n// response"),
    );
  }
  lockfile(box, dir);
  return dir;
}

/**
 * create-hono's `nodejs` template as honojs/starter has it (templates/nodejs: package.json with
 * `build: tsc`, `start: node dist/index.js`; src/index.ts serving on port 3000; tsconfig.json), with
 * the package-lock that create-hono's install (`--pm npm`) writes. `fixed`: the change the failure
 * message asks for (port and hostname from PORT and HOST), and a /version route.
 */
export async function honoApp(box: Toolbox, fixed: boolean): Promise<string> {
  const dir = join(box.dir, fixed ? 'hono-app-fixed' : 'hono-app');
  const serve = fixed ? '  port: Number(process.env.PORT),\n  hostname: process.env.HOST\n' : '  port: 3000\n';
  const version = fixed ? "app.get('/version', (c) => c.json({ node: process.version, nodeEnv: process.env.NODE_ENV }))\n\n" : '';
  await writeTree(dir, {
    'package.json': `${JSON.stringify(
      {
        name: 'hono-app',
        type: 'module',
        scripts: { dev: 'tsx watch src/index.ts', build: 'tsc', start: 'node dist/index.js' },
        dependencies: { '@hono/node-server': `^${PINNED.honoNodeServer}`, hono: `^${PINNED.hono}` },
        devDependencies: { '@types/node': '^26.1.1', tsx: '^4.23.0', typescript: '^7.0.2' },
      },
      null,
      2,
    )}\n`,
    'src/index.ts': [
      "import { serve } from '@hono/node-server'",
      "import { Hono } from 'hono'",
      '',
      'const app = new Hono()',
      '',
      "app.get('/', (c) => {",
      "  return c.text('Hello Hono!')",
      '})',
      '',
      `${version}serve({`,
      '  fetch: app.fetch,',
      `${serve}}, (info) => {`,
      '  console.log(`Server is running on http://localhost:${info.port}`)',
      '})',
      '',
    ].join('\n'),
    'tsconfig.json': `${JSON.stringify(
      {
        compilerOptions: {
          target: 'ESNext',
          module: 'NodeNext',
          strict: true,
          verbatimModuleSyntax: true,
          skipLibCheck: true,
          types: ['node'],
          jsx: 'react-jsx',
          jsxImportSource: 'hono/jsx',
          rootDir: './src',
          outDir: './dist',
        },
        exclude: ['node_modules'],
      },
      null,
      2,
    )}\n`,
    '.gitignore': 'node_modules\ndist\n',
  });
  lockfile(box, dir);
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

/**
 * Astro in server mode with `@astrojs/node` in `standalone` mode, as Astro's Node adapter guide
 * writes it (`npx astro add node`: the adapter in dependencies, `output: 'server'`,
 * `adapter: node({ mode: 'standalone' })`), on the static site's pages, plus a page rendered per
 * request and an imported image.
 */
export async function astroNode(box: Toolbox): Promise<string> {
  const dir = await astroSite(box, 'astro-node');
  await edit(join(dir, 'package.json'), (text) => {
    const pkg = JSON.parse(text) as { dependencies: Record<string, string> };
    pkg.dependencies['@astrojs/node'] = PINNED.astroNode;
    return `${JSON.stringify(pkg, null, 2)}\n`;
  });
  await edit(join(dir, 'astro.config.mjs'), () =>
    "import { defineConfig } from 'astro/config';\nimport node from '@astrojs/node';\n\nexport default defineConfig({\n  output: 'server',\n  adapter: node({\n    mode: 'standalone',\n  }),\n});\n",
  );
  await writeTree(dir, {
    'src/pages/now.astro': '---\nconst node = process.version;\n---\n<html lang="en">\n  <head><meta charset="utf-8" /><title>Now</title></head>\n  <body><h1>Rendered by Astro on Node {node}</h1></body>\n</html>\n',
    // An image from src/assets, as create-astro's basics template has: the build emits it to
    // dist/client/_astro/ with a content hash (small CSS and scripts are inlined, so they make none).
    'src/assets/logo.svg': '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32"><circle cx="16" cy="16" r="14" fill="rebeccapurple"/></svg>\n',
  });
  await edit(join(dir, 'src', 'pages', 'index.astro'), (text) =>
    text.replace('const title', "import logo from '../assets/logo.svg';\nconst title").replace('<a href="/about/">', '<img src={logo.src} alt="logo" /><a href="/about/">'),
  );
  return dir;
}

/**
 * React Router 7 in SPA mode: the framework-mode layout above with `ssr: false` in
 * react-router.config.ts (React Router's "Single Page App (SPA)" guide), so `react-router build`
 * writes a static build/client; the about route reads its data in a clientLoader.
 */
export async function reactRouterSpa(box: Toolbox): Promise<string> {
  const dir = await reactRouterApp(box, 'react-router-spa');
  await edit(join(dir, 'react-router.config.ts'), (text) => text.replace('ssr: true', 'ssr: false'));
  await edit(join(dir, 'app', 'routes', 'about.tsx'), () =>
    'export function clientLoader() {\n  return { where: "the browser" };\n}\n\nexport default function About({ loaderData }: { loaderData: { where: string } }) {\n  return <h1>About, loaded in {loaderData.where}</h1>;\n}\n',
  );
  return dir;
}

/**
 * Remix v2 classic (Vite), laid out as `create-remix`'s default template (which it fetches from
 * GitHub at creation time): `remix vite:build`, `remix-serve ./build/server/index.js`, app/root.tsx
 * with the Remix components, app/routes/ flat routes; an /about route with a loader.
 */
export async function remixApp(box: Toolbox): Promise<string> {
  const dir = join(box.dir, 'remix-app');
  const v = PINNED.remix;
  await writeTree(dir, {
    'package.json': packageJson('remix-app', {
      scripts: { build: 'remix vite:build', dev: 'remix vite:dev', start: 'remix-serve ./build/server/index.js' },
      dependencies: { '@remix-run/node': v, '@remix-run/react': v, '@remix-run/serve': v, isbot: '^4.1.0', react: '^18.2.0', 'react-dom': '^18.2.0' },
      devDependencies: { '@remix-run/dev': v, vite: PINNED.remixVite },
      engines: { node: '>=20.0.0' },
    }),
    'vite.config.ts': [
      'import { vitePlugin as remix } from "@remix-run/dev";',
      'import { defineConfig } from "vite";',
      '',
      'export default defineConfig({',
      '  plugins: [',
      '    remix({',
      '      future: {',
      '        v3_fetcherPersist: true,',
      '        v3_relativeSplatPath: true,',
      '        v3_throwAbortReason: true,',
      '        v3_singleFetch: true,',
      '        v3_lazyRouteDiscovery: true,',
      '      },',
      '    }),',
      '  ],',
      '});',
      '',
    ].join('\n'),
    'app/root.tsx': rootRoute('@remix-run/react'),
    'app/routes/_index.tsx': 'import type { MetaFunction } from "@remix-run/node";\n\nexport const meta: MetaFunction = () => [{ title: "Zepid Remix e2e" }];\n\nexport default function Index() {\n  return <h1>Welcome to Remix</h1>;\n}\n',
    'app/routes/about.tsx': 'import { useLoaderData } from "@remix-run/react";\n\nexport function loader() {\n  return { node: process.version };\n}\n\nexport default function About() {\n  const { node } = useLoaderData<typeof loader>();\n  return <h1>About, served by Node {node}</h1>;\n}\n',
  });
  return dir;
}

/**
 * SvelteKit with adapter-static as the Svelte CLI sets it up (`sv create` minimal, then
 * `sv add sveltekit-adapter=adapter:static`), prerendering every page as adapter-static's docs ask
 * (`export const prerender = true` in the root layout; the adapter's default `strict` fails the
 * build otherwise), with an /about page.
 */
export async function svelteKitStatic(box: Toolbox): Promise<string> {
  const name = 'kit-static';
  npmExec(box, box.dir, PINNED.sv, ['sv', 'create', name, '--template', 'minimal', '--types', 'ts', '--no-add-ons', '--no-install']);
  const dir = join(box.dir, name);
  npmExec(box, dir, PINNED.sv, ['sv', 'add', 'sveltekit-adapter=adapter:static', '--no-install']);
  await writeTree(dir, {
    'src/routes/+layout.ts': 'export const prerender = true;\n',
    'src/routes/about/+page.svelte': '<h1>About this SvelteKit site</h1>\n',
  });
  return dir;
}

/**
 * Next.js static export: create-next-app's project with `output: 'export'` (Next's "Static Exports"
 * guide), an /about page and a not-found page (exported as 404.html).
 */
export async function nextExport(box: Toolbox): Promise<string> {
  const dir = await createNextApp(box, 'next-export', 'Zepid Next export e2e');
  // The template's config turns on cacheComponents and partialPrefetching; `next build` then stops
  // with "Invariant: PPR cannot be enabled in export mode" (and partialPrefetching alone with
  // "requires cacheComponents"), so a static export drops both, as a user must.
  await edit(join(dir, 'next.config.mjs'), (text) =>
    text
      .replace('const nextConfig = {', "const nextConfig = {\n  output: 'export',")
      .replace(/\n\s*cacheComponents: true,/, '')
      .replace(/\n\s*partialPrefetching: true,/, ''),
  );
  await writeTree(dir, {
    'app/about/page.js': 'export default function About() {\n  return <h1>About this exported Next site</h1>;\n}\n',
    'app/not-found.js': 'export default function NotFound() {\n  return <h1>Next export says: no such page</h1>;\n}\n',
  });
  return dir;
}
