/**
 * The table behind the build plan: which package manager installs a project, and which framework
 * builds it, with the directory its build writes and how it starts. One table, read by the local
 * builder (which runs the commands) and the Dockerfile generator (which kaniko builds in Azure), so
 * a project builds the same way in both modes.
 */

export type PackageManagerName = 'npm' | 'pnpm' | 'yarn' | 'bun';

export interface PackageManagerChoice {
  name: PackageManagerName;
  /** `yarn` 2+ (berry) installs differently from yarn 1 (classic). */
  flavour: 'classic' | 'berry' | null;
  /** The lockfile that chose it, when one did. */
  lockfile: string | null;
  /**
   * The npm package (pinned `name@version`) that provides the tool; null for npm, which ships with
   * Node. Fetched from the npm registry once per version and cached across builds, never taken from
   * the host's PATH: a build then behaves the same on every worker and in the image.
   */
  tool: string | null;
  /** Why this manager and version, for the deployment log. */
  reason: string;
  install: string;
  /** The command that runs a package.json script with this manager. */
  run: (script: string) => string;
}

/**
 * Pinned tool versions, used when the project does not name one in `packageManager`. pnpm follows
 * the lockfile format: a pnpm 10 refuses a v6 lockfile with --frozen-lockfile, so older lockfiles get
 * the last pnpm that wrote them.
 */
export const TOOL_PINS = {
  pnpmByLockfile: [
    { lockfile: /^5\./, version: '7.33.7' },
    { lockfile: /^6\./, version: '8.15.9' },
  ],
  pnpm: '10.34.9',
  yarnClassic: '1.22.22',
  /** Yarn 2+ is published on npm as @yarnpkg/cli-dist (the `yarn` package is classic only). */
  yarnBerry: '4.18.1',
  bun: '1.4.5',
} as const;

interface PackageJsonFields {
  packageManager?: unknown;
}

/** `packageManager: "pnpm@9.1.0+sha512.…"` → name and exact version; null when absent or not one we run. */
function declaredManager(pkg: PackageJsonFields): { name: PackageManagerName; version: string } | null {
  if (typeof pkg.packageManager !== 'string') return null;
  const match = /^(npm|pnpm|yarn|bun)@(\d+\.\d+\.\d+[\w.-]*)/.exec(pkg.packageManager);
  if (match === null) return null;
  return { name: match[1] as PackageManagerName, version: match[2] as string };
}

function pnpmVersionFor(lockfile: Buffer | undefined): { version: string; why: string } {
  const format = lockfile === undefined ? null : (/^lockfileVersion:\s*'?([\d.]+)'?/m.exec(lockfile.toString('utf8'))?.[1] ?? null);
  const pinned = format === null ? undefined : TOOL_PINS.pnpmByLockfile.find((entry) => entry.lockfile.test(format));
  if (pinned !== undefined) return { version: pinned.version, why: `the last pnpm writing lockfile v${format}` };
  return { version: TOOL_PINS.pnpm, why: 'the pinned default' };
}

/**
 * The package manager, from the lockfile first (it is what makes an install reproducible), then the
 * `packageManager` field, else npm. The version: the one `packageManager` names, else a pin.
 */
export function choosePackageManager(files: ReadonlyMap<string, Buffer>, pkg: PackageJsonFields): PackageManagerChoice {
  const declared = declaredManager(pkg);
  const lockfiles: [string, PackageManagerName][] = [
    ['pnpm-lock.yaml', 'pnpm'],
    ['yarn.lock', 'yarn'],
    ['bun.lock', 'bun'],
    ['bun.lockb', 'bun'],
    ['package-lock.json', 'npm'],
    ['npm-shrinkwrap.json', 'npm'],
  ];
  const found = lockfiles.filter(([file]) => files.has(file));
  // With two lockfiles, the one packageManager names wins; else the first in the order above.
  const chosen = found.find(([, name]) => name === declared?.name) ?? found[0] ?? null;
  const name: PackageManagerName = chosen?.[1] ?? declared?.name ?? 'npm';
  const lockfile = chosen?.[0] ?? null;
  const version = declared?.name === name ? declared.version : null;
  const basis =
    lockfile !== null
      ? `${lockfile} found${found.length > 1 ? ` (also ${found.filter(([file]) => file !== lockfile).map(([file]) => file).join(', ')})` : ''}`
      : declared !== null
        ? `no lockfile; packageManager names ${name}`
        : 'no lockfile and no packageManager field';
  const frozen = lockfile !== null;

  switch (name) {
    case 'npm':
      return {
        name,
        flavour: null,
        lockfile,
        tool: null,
        reason: `${basis}: npm (the worker's own)${version === null ? '' : `; packageManager asks for npm ${version}, the worker's npm is used`}`,
        install: frozen ? 'npm ci' : 'npm install --no-audit --no-fund',
        run: (script) => `npm run ${script}`,
      };
    case 'pnpm': {
      const pick = version === null ? pnpmVersionFor(files.get('pnpm-lock.yaml')) : { version, why: 'named by packageManager' };
      return {
        name,
        flavour: null,
        lockfile,
        tool: `pnpm@${pick.version}`,
        reason: `${basis}: pnpm ${pick.version} (${pick.why})`,
        install: frozen ? 'pnpm install --frozen-lockfile' : 'pnpm install --no-frozen-lockfile',
        run: (script) => `pnpm run ${script}`,
      };
    }
    case 'yarn': {
      const lock = files.get('yarn.lock')?.toString('utf8') ?? '';
      const berry = version !== null ? !version.startsWith('1.') : files.has('.yarnrc.yml') || lock.includes('__metadata:');
      if (!berry) {
        const pinned = version ?? TOOL_PINS.yarnClassic;
        return {
          name,
          flavour: 'classic',
          lockfile,
          tool: `yarn@${pinned}`,
          reason: `${basis}: yarn classic ${pinned} (${version === null ? 'the pinned default' : 'named by packageManager'})`,
          install: frozen ? 'yarn install --frozen-lockfile' : 'yarn install',
          run: (script) => `yarn run ${script}`,
        };
      }
      const pinned = version ?? TOOL_PINS.yarnBerry;
      // node_modules rather than Plug'n'Play: the app then starts with plain node (and `npm start`)
      // where yarn is not installed, locally and in the image's runtime stage.
      return {
        name,
        flavour: 'berry',
        lockfile,
        tool: `@yarnpkg/cli-dist@${pinned}`,
        reason: `${basis}: yarn ${pinned} (berry; ${version === null ? 'the pinned default' : 'named by packageManager'}), installing into node_modules`,
        install: frozen ? 'YARN_NODE_LINKER=node-modules yarn install --immutable' : 'YARN_NODE_LINKER=node-modules yarn install',
        // The linker must be the install's for every later yarn command too: else yarn takes the
        // project for an uninstalled Plug'n'Play one ("doesn't seem to have been installed").
        run: (script) => `YARN_NODE_LINKER=node-modules yarn run ${script}`,
      };
    }
    case 'bun': {
      const pinned = version ?? TOOL_PINS.bun;
      return {
        name,
        flavour: null,
        lockfile,
        tool: `bun@${pinned}`,
        reason: `${basis}: bun ${pinned} (${version === null ? 'the pinned default' : 'named by packageManager'})`,
        install: frozen ? 'bun install --frozen-lockfile' : 'bun install',
        run: (script) => `bun run ${script}`,
      };
    }
  }
}

/** What the framework table needs to know about a project. */
export interface ProjectFacts {
  files: ReadonlyMap<string, Buffer>;
  dependencies: ReadonlySet<string>;
  scripts: Readonly<Record<string, string>>;
}

/** What a framework's build produces and how it runs. */
export interface FrameworkPlan {
  /** Stable id shown in logs and the status: `vite`, `next`, `sveltekit`, `express`, … */
  framework: string;
  kind: 'static' | 'node';
  /** Build command when the project has no `build` script (most frameworks' templates do). */
  defaultBuild: string | null;
  /**
   * Static: the directory served. Node: what the build must leave for the start command (checked
   * after the build, so a missing adapter fails the build, not the start). Null: not known ahead.
   */
  outputDir: string | null;
  /** Node: the start command locally (the runtime gives PORT, HOST and HOSTNAME). */
  start: string | null;
  /** What to tell the user when the output is missing. */
  outputHint: string | null;
  /** Node apps whose image runs something else than `start` (Next's standalone server). */
  image: 'next-standalone' | null;
}

function fileText(facts: ProjectFacts, names: readonly string[]): string {
  return names.map((name) => facts.files.get(name)?.toString('utf8') ?? '').join('\n');
}

const has = (facts: ProjectFacts, ...names: string[]) => names.some((name) => facts.dependencies.has(name));
const bin = (name: string) => `./node_modules/.bin/${name}`;

// Newer `sv create` templates configure the adapter in vite.config.ts.
const SVELTE_CONFIGS = ['svelte.config.js', 'svelte.config.mjs', 'svelte.config.ts', 'vite.config.ts', 'vite.config.js', 'vite.config.mjs', 'vite.config.mts'];
const NEXT_CONFIGS = ['next.config.js', 'next.config.mjs', 'next.config.ts', 'next.config.cjs'];
const ASTRO_CONFIGS = ['astro.config.mjs', 'astro.config.js', 'astro.config.ts', 'astro.config.mts'];
const REACT_ROUTER_CONFIGS = ['react-router.config.ts', 'react-router.config.js'];
const VITE_CONFIGS = ['vite.config.ts', 'vite.config.js', 'vite.config.mjs', 'vite.config.mts'];

/** A start script that only runs a framework's dev or preview server says nothing about production. */
function devServerScript(script: string | undefined): boolean {
  return script === undefined || /^\s*(vite|react-scripts start|vite preview|astro (dev|preview)|nuxt dev|next dev)\b/.test(script);
}

/**
 * The framework table, most specific first: SvelteKit, Astro, React Router and Nuxt all depend on
 * Vite, so Vite comes after them. Each entry detects from dependencies and config files.
 */
const FRAMEWORKS: { detect: (facts: ProjectFacts) => FrameworkPlan | null }[] = [
  {
    detect: (facts) => {
      if (!has(facts, 'next')) return null;
      // `output: 'export'` makes `next build` write a static site to out/.
      if (/output\s*:\s*['"]export['"]/.test(fileText(facts, NEXT_CONFIGS))) {
        return { framework: 'next', kind: 'static', defaultBuild: `${bin('next')} build`, outputDir: 'out', start: null, outputHint: "next.config sets output: 'export'; `next build` should write out/", image: null };
      }
      return {
        framework: 'next',
        kind: 'node',
        defaultBuild: `${bin('next')} build`,
        outputDir: '.next',
        start: `${bin('next')} start -p "$PORT" -H "\${HOSTNAME:-127.0.0.1}"`,
        outputHint: 'the build script should run `next build`',
        image: 'next-standalone',
      };
    },
  },
  {
    detect: (facts) => {
      if (!has(facts, 'nuxt')) return null;
      return {
        framework: 'nuxt',
        kind: 'node',
        defaultBuild: `${bin('nuxt')} build`,
        outputDir: '.output/server/index.mjs',
        start: 'node .output/server/index.mjs',
        outputHint: 'the build script should run `nuxt build` (a server build; `nuxt generate` output is not served)',
        image: null,
      };
    },
  },
  {
    detect: (facts) => {
      if (!has(facts, '@sveltejs/kit')) return null;
      const config = fileText(facts, SVELTE_CONFIGS);
      const uses = (adapter: string) => config.includes(`@sveltejs/adapter-${adapter}`) || (config === '' && has(facts, `@sveltejs/adapter-${adapter}`));
      const both = 'use @sveltejs/adapter-node (a server: `npm i -D @sveltejs/adapter-node`) or @sveltejs/adapter-static (a static site) in svelte.config.js or vite.config.ts';
      if (uses('node')) {
        return { framework: 'sveltekit', kind: 'node', defaultBuild: `${bin('vite')} build`, outputDir: 'build', start: 'node build', outputHint: `@sveltejs/adapter-node writes build/; ${both}`, image: null };
      }
      if (uses('static')) {
        // adapter-static's `pages` option (its README: "the directory to write prerendered pages to",
        // default build) names the output; a path leaving the project is not followed.
        const named = /adapter\s*\(\s*\{[^}]*?\bpages\s*:\s*['"]([^'"]+)['"]/s.exec(config)?.[1]?.replace(/^\.\//, '').replace(/\/+$/, '');
        const pages = named !== undefined && named !== '' && !named.startsWith('/') && !named.split('/').includes('..') ? named : 'build';
        return { framework: 'sveltekit', kind: 'static', defaultBuild: `${bin('vite')} build`, outputDir: pages, start: null, outputHint: `@sveltejs/adapter-static writes ${pages}/ (its pages option); ${both}`, image: null };
      }
      // adapter-auto (the template's default) builds for Vercel, Netlify, Cloudflare…, and here for
      // nothing: the build "succeeds" with no output, which is caught after the build.
      return {
        framework: 'sveltekit',
        kind: 'static',
        defaultBuild: `${bin('vite')} build`,
        outputDir: 'build',
        start: null,
        outputHint: `@sveltejs/adapter-auto produces no output this service can run; ${both}`,
        image: null,
      };
    },
  },
  {
    detect: (facts) => {
      if (!has(facts, 'astro')) return null;
      const config = fileText(facts, ASTRO_CONFIGS);
      if (has(facts, '@astrojs/node') || config.includes('@astrojs/node')) {
        // mode: 'middleware' builds a handler for the project's own server (Astro's Node adapter
        // docs): dist/server/entry.mjs then exits at once, listening on nothing. The project's start
        // script runs that server.
        if (/mode\s*:\s*['"]middleware['"]/.test(config)) {
          return {
            framework: 'astro',
            kind: 'node',
            defaultBuild: `${bin('astro')} build`,
            outputDir: 'dist/server/entry.mjs',
            start: facts.scripts.start === undefined || devServerScript(facts.scripts.start) ? null : 'npm start',
            outputHint: "@astrojs/node in mode 'middleware' writes dist/server/entry.mjs for your own server",
            image: null,
          };
        }
        return {
          framework: 'astro',
          kind: 'node',
          defaultBuild: `${bin('astro')} build`,
          outputDir: 'dist/server/entry.mjs',
          start: 'node ./dist/server/entry.mjs',
          outputHint: "@astrojs/node in mode 'standalone' writes dist/server/entry.mjs",
          image: null,
        };
      }
      return { framework: 'astro', kind: 'static', defaultBuild: `${bin('astro')} build`, outputDir: 'dist', start: null, outputHint: 'a static Astro build writes dist/', image: null };
    },
  },
  {
    detect: (facts) => {
      if (!has(facts, '@react-router/dev')) return null;
      if (/ssr\s*:\s*false/.test(fileText(facts, REACT_ROUTER_CONFIGS))) {
        return { framework: 'react-router', kind: 'static', defaultBuild: `${bin('react-router')} build`, outputDir: 'build/client', start: null, outputHint: 'with ssr: false, `react-router build` writes build/client', image: null };
      }
      return {
        framework: 'react-router',
        kind: 'node',
        defaultBuild: `${bin('react-router')} build`,
        outputDir: 'build/server/index.js',
        start: `${bin('react-router-serve')} ./build/server/index.js`,
        outputHint: '`react-router build` writes build/server and build/client; @react-router/serve must be a dependency',
        image: null,
      };
    },
  },
  {
    detect: (facts) => {
      if (!has(facts, '@remix-run/dev')) return null;
      // Remix's SPA mode (its docs' "SPA Mode": `remix({ ssr: false })` in vite.config) writes only
      // build/client, with an index.html, and removes build/server: a static site, as React Router's.
      if (/ssr\s*:\s*false/.test(fileText(facts, VITE_CONFIGS))) {
        return { framework: 'remix', kind: 'static', defaultBuild: `${bin('remix')} vite:build`, outputDir: 'build/client', start: null, outputHint: 'with ssr: false, `remix vite:build` writes build/client', image: null };
      }
      return {
        framework: 'remix',
        kind: 'node',
        defaultBuild: `${bin('remix')} vite:build`,
        outputDir: 'build/server/index.js',
        start: `${bin('remix-serve')} ./build/server/index.js`,
        outputHint: '`remix vite:build` writes build/server; @remix-run/serve must be a dependency',
        image: null,
      };
    },
  },
  {
    detect: (facts) =>
      has(facts, 'react-scripts')
        ? { framework: 'create-react-app', kind: 'static', defaultBuild: `${bin('react-scripts')} build`, outputDir: 'build', start: null, outputHint: '`react-scripts build` writes build/', image: null }
        : null,
  },
  {
    detect: (facts) => {
      if (!has(facts, 'vite')) return null;
      // A Vite project with its own server (SSR, an API) says so with a start script that is not Vite's.
      if (!devServerScript(facts.scripts.start)) return null;
      const flavour = has(facts, 'react', 'react-dom') ? 'vite-react' : has(facts, 'vue') ? 'vite-vue' : has(facts, 'svelte') ? 'vite-svelte' : 'vite';
      return { framework: flavour, kind: 'static', defaultBuild: `${bin('vite')} build`, outputDir: 'dist', start: null, outputHint: '`vite build` writes dist/ (unless build.outDir says otherwise)', image: null };
    },
  },
];

const SERVER_FRAMEWORKS = ['express', 'fastify', 'koa', 'hono', '@hono/node-server', 'h3', 'polka'];

/**
 * What to write, per server framework, so that an app listens where it is told (PORT, and HOST where
 * the platform sets one: 127.0.0.1 locally). Both runtimes quote it when an app does not (the local
 * one when it sees the app on another port, Container Apps when the revision never gets healthy).
 */
const LISTEN_FIXES: Readonly<Record<string, string>> = {
  koa: 'app.listen(process.env.PORT, process.env.HOST)',
  express: 'app.listen(process.env.PORT, process.env.HOST)',
  hono: 'serve({ fetch: app.fetch, port: Number(process.env.PORT), hostname: process.env.HOST })',
  fastify: 'fastify.listen({ port: Number(process.env.PORT), host: process.env.HOST })',
};

/** The line that makes an app of `framework` listen on PORT (and HOST), if the table has one. */
export function listenFix(framework: string): string | undefined {
  return LISTEN_FIXES[framework];
}

/** The framework of a project with a package.json, or null when the table does not know it. */
export function detectFramework(facts: ProjectFacts): FrameworkPlan | null {
  for (const entry of FRAMEWORKS) {
    const plan = entry.detect(facts);
    if (plan !== null) return plan;
  }
  const server = SERVER_FRAMEWORKS.find((name) => facts.dependencies.has(name));
  if (server !== undefined) {
    return {
      framework: server.replace(/^@hono\/node-server$/, 'hono'),
      kind: 'node',
      defaultBuild: null,
      outputDir: null,
      start: facts.scripts.start === undefined ? null : 'npm start',
      outputHint: null,
      image: null,
    };
  }
  return null;
}

/** Where the build of a static project of unknown framework is looked for, in order. */
export const STATIC_OUTPUT_CANDIDATES = ['dist', 'build', 'out', 'public'] as const;
