import type { DeploymentSpec } from './deployment.ts';
import { DeployError } from './errors.ts';
import type { PackageManagerName } from './frameworks.ts';
import { choosePackageManager, detectFramework, STATIC_OUTPUT_CANDIDATES } from './frameworks.ts';
import { staticRulesScript } from './static-rules.ts';
import { IMMUTABLE_CACHE_CONTROL, REVALIDATE_CACHE_CONTROL, staticImageStage } from './static-site.ts';

/**
 * How a source becomes an image: detected once from the files (frameworks.ts holds the table), used
 * by the local builder (which runs the commands) and by the Dockerfile generator (which kaniko builds
 * in Azure). A user's buildCommand and startCommand always win over what the table says.
 */
export type ProjectKind = 'static' | 'node' | 'dockerfile';

export interface BuildPlan {
  kind: ProjectKind;
  /** What was detected: `vite-react`, `next`, `sveltekit`, `express`, `static-html`, `node` (none known), `dockerfile`. */
  framework: string;
  /** Null when there is no package.json. */
  packageManager: {
    name: PackageManagerName;
    /** Pinned `package@version` of the tool, fetched from the npm registry; null for npm (it comes with Node). */
    tool: string | null;
    lockfile: string | null;
    /** Why this manager and version, for the log. */
    reason: string;
  } | null;
  /** Runs with dev dependencies (NODE_ENV unset); null when there is no package.json. */
  install: string | null;
  /** Runs with NODE_ENV=production. */
  build: string | null;
  /** Null for a static site: the service serves the files itself. Runs with NODE_ENV=production. */
  start: string | null;
  /**
   * Static: the directory served, relative to the project (`.` for plain HTML); null when the
   * framework is unknown and the first of STATIC_OUTPUT_CANDIDATES with an index.html is taken.
   * Node: a path the build must have written for the start command to work, else null.
   */
  outputDir: string | null;
  /** Said with BUILD_OUTPUT_MISSING: how to make the build write what the plan expects. */
  outputHint: string | null;
  /** How the generated Dockerfile runs a Node app: its start command, or Next's standalone server. */
  image: 'start' | 'next-standalone';
  /** Port the container listens on in Azure; locally the runtime picks a free one and passes PORT. */
  port: number;
}

export const DEFAULT_CONTAINER_PORT = 8080;
/** Where a built static site is looked for, in order (kept for the runtime, which serves the first with an index.html). */
export const STATIC_ROOTS = ['dist', 'build', 'out', 'public', '.'] as const;

interface PackageJson {
  scripts?: Record<string, string>;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  packageManager?: unknown;
}

export function parsePackageJson(data: Buffer | undefined): PackageJson | null {
  if (data === undefined) return null;
  try {
    const parsed: unknown = JSON.parse(data.toString('utf8'));
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
    return parsed;
  } catch (error) {
    throw new DeployError('SOURCE_INVALID', `package.json is not valid JSON: ${(error as Error).message}`);
  }
}

function stringRecord(value: unknown): Record<string, string> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return {};
  return Object.fromEntries(Object.entries(value).filter((entry): entry is [string, string] => typeof entry[1] === 'string'));
}

export function planBuild(files: ReadonlyMap<string, Buffer>, spec: Pick<DeploymentSpec, 'buildCommand' | 'startCommand' | 'port'>): BuildPlan {
  const port = spec.port ?? DEFAULT_CONTAINER_PORT;
  const pkg = parsePackageJson(files.get('package.json'));
  if (pkg !== null) return planPackage(files, pkg, spec, port);
  const base = { packageManager: null, install: null, outputHint: null, image: 'start' as const, port };
  if (spec.startCommand !== null) {
    return { ...base, kind: 'node', framework: 'node', build: spec.buildCommand, start: spec.startCommand, outputDir: null };
  }
  if (files.has('index.html')) {
    return { ...base, kind: 'static', framework: 'static-html', build: spec.buildCommand, start: null, outputDir: '.' };
  }
  const prebuilt = STATIC_OUTPUT_CANDIDATES.find((dir) => files.has(`${dir}/index.html`));
  if (prebuilt !== undefined) {
    return { ...base, kind: 'static', framework: 'static-html', build: spec.buildCommand, start: null, outputDir: prebuilt };
  }
  if (files.has('Dockerfile')) {
    return { ...base, kind: 'dockerfile', framework: 'dockerfile', build: null, start: null, outputDir: null };
  }
  throw new DeployError(
    'SOURCE_INVALID',
    'Cannot tell how to run this project: add an index.html (static site), a package.json with a start script, a startCommand, or a Dockerfile',
  );
}

function planPackage(
  files: ReadonlyMap<string, Buffer>,
  pkg: PackageJson,
  spec: Pick<DeploymentSpec, 'buildCommand' | 'startCommand'>,
  port: number,
): BuildPlan {
  const scripts = stringRecord(pkg.scripts);
  const dependencies = new Set([...Object.keys(stringRecord(pkg.dependencies)), ...Object.keys(stringRecord(pkg.devDependencies))]);
  const manager = choosePackageManager(files, pkg);
  const packageManager = { name: manager.name, tool: manager.tool, lockfile: manager.lockfile, reason: manager.reason };
  const detected = detectFramework({ files, dependencies, scripts });
  const scriptBuild = scripts.build !== undefined ? manager.run('build') : null;
  const build = spec.buildCommand ?? scriptBuild ?? detected?.defaultBuild ?? null;
  const common = { framework: detected?.framework ?? 'node', packageManager, install: manager.install, build, port };

  // The user's start command makes it an app, whatever the framework would have done.
  if (spec.startCommand !== null) {
    return { ...common, kind: 'node', start: spec.startCommand, outputDir: null, outputHint: null, image: 'start' };
  }
  if (detected !== null && detected.kind === 'node') {
    if (detected.start === null) {
      throw new DeployError(
        'SOURCE_INVALID',
        `This looks like a ${detected.framework} server but package.json has no start script: add "scripts": {"start": "node server.js"} (or send a startCommand)`,
      );
    }
    // A custom build command may write elsewhere: only the table's own build is held to its output.
    const tableBuild = spec.buildCommand === null;
    return {
      ...common,
      kind: 'node',
      start: detected.start,
      outputDir: tableBuild ? detected.outputDir : null,
      outputHint: tableBuild ? detected.outputHint : null,
      image: detected.image ?? 'start',
    };
  }
  if (detected !== null) {
    return { ...common, kind: 'static', start: null, outputDir: detected.outputDir, outputHint: detected.outputHint, image: 'start' };
  }
  if (scripts.start !== undefined) {
    return { ...common, kind: 'node', start: 'npm start', outputDir: null, outputHint: null, image: 'start' };
  }
  // A package.json with no server: its build writes a static site somewhere conventional. Without a
  // build, the sources must already hold the site in one of those directories; never the root.
  return {
    ...common,
    kind: 'static',
    start: null,
    outputDir: null,
    image: 'start',
    outputHint:
      build === null
        ? 'add a "build" script that writes the site to dist/, or a "start" script that runs a server'
        : 'make the build write the site (with an index.html) to dist/, or add a "start" script that runs a server',
  };
}

/** Files an install reads besides package.json and the lockfile: copied before the rest so sources alone do not invalidate it. */
const INSTALL_CONFIGS = ['.npmrc', '.yarnrc', '.yarnrc.yml', 'bunfig.toml', '.pnpmfile.cjs'];

/**
 * What the install needs, in a layer of its own: the generated Dockerfile copies these, installs,
 * then copies the rest, so kaniko's cache skips the install when only sources changed. Null when the
 * install needs more than that (workspaces: every package's manifest; patches): then everything is
 * copied first.
 */
export function installInputs(plan: BuildPlan, paths: readonly string[]): string[] | null {
  if (plan.packageManager === null) return null;
  const present = new Set(paths);
  if (present.has('pnpm-workspace.yaml') || paths.some((path) => path.startsWith('patches/') || path.startsWith('.yarn/patches/'))) return null;
  const inputs = ['package.json', ...(plan.packageManager.lockfile === null ? [] : [plan.packageManager.lockfile]), ...INSTALL_CONFIGS.filter((name) => present.has(name))];
  // Yarn berry may pin its own release in .yarn/releases (yarnPath); the install runs it.
  inputs.push(...paths.filter((path) => path.startsWith('.yarn/releases/')));
  return inputs;
}

/**
 * Renames the project's next.config.* to next.config.user.* and writes a next.config.mjs that loads
 * it (object or function) and sets output: 'standalone'. A next.config.ts is loaded by Node's own
 * type stripping (Node 24), which handles the usual `import type` + object config.
 */
export const NEXT_STANDALONE_WRAPPER = [
  "import { existsSync, renameSync, writeFileSync } from 'node:fs';",
  "const ext = ['mjs', 'js', 'cjs', 'ts', 'mts'].find((e) => existsSync('next.config.' + e));",
  "if (ext) renameSync('next.config.' + ext, 'next.config.user.' + ext);",
  "const load = ext ? 'import config from \\'./next.config.user.' + ext + '\\';' : 'const config = {};';",
  "writeFileSync('next.config.mjs', load + '\\nexport default async function (...args) {\\n  const resolved = (typeof config === \\'function\\' ? await config(...args) : config) ?? {};\\n  return { ...resolved, output: \\'standalone\\' };\\n}\\n');",
].join(' ');

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * The Dockerfile kaniko builds when the source has none, from the same plan as a local build: the
 * install runs with dev dependencies, the build and the app with NODE_ENV=production.
 * `paths` are the source's files (the plan alone cannot tell which install configs exist).
 */
export function generateDockerfile(plan: BuildPlan, paths: readonly string[] = []): string {
  if (plan.kind === 'dockerfile') throw new Error('the source has its own Dockerfile');
  const lines = ['# Generated by Zepid Deploy v3', `# framework: ${plan.framework}; package manager: ${plan.packageManager?.name ?? 'none'}`, 'FROM node:24-slim AS build', 'WORKDIR /app'];
  if (plan.packageManager?.tool != null) {
    // The pinned tool from the npm registry, in a layer of its own (cached until the pin changes).
    lines.push(`RUN npm install --global --no-audit --no-fund ${plan.packageManager.tool}`);
  }
  if (plan.install !== null) {
    const inputs = installInputs(plan, paths);
    if (inputs === null) {
      lines.push('COPY . .', `RUN ${plan.install}`);
    } else {
      lines.push(`COPY ${JSON.stringify([...inputs, './'])}`, `RUN ${plan.install}`, 'COPY . .');
    }
  } else {
    lines.push('COPY . .');
  }
  lines.push('ENV NODE_ENV=production');
  if (plan.image === 'next-standalone') {
    // Next writes .next/standalone (a server with only the files it needs) only when its config says
    // output: 'standalone', and no environment variable asks for it: wrap the project's config.
    lines.push(`RUN node --input-type=module -e ${shellQuote(NEXT_STANDALONE_WRAPPER)}`);
  }
  if (plan.build !== null) lines.push(`RUN sh -c ${shellQuote(plan.build)}`);
  if (plan.outputDir !== null && plan.kind === 'node') {
    lines.push(`RUN test -e ${shellQuote(plan.outputDir)} || { echo ${shellQuote(`BUILD_OUTPUT_MISSING: the build did not write ${plan.outputDir}; ${plan.outputHint ?? ''}`)} >&2; exit 1; }`);
  }

  if (plan.kind === 'node' && plan.start !== null) {
    if (plan.image === 'next-standalone') {
      lines.push(
        'RUN mkdir -p public',
        'FROM node:24-slim',
        'WORKDIR /app',
        'ENV NODE_ENV=production',
        // Docker sets HOSTNAME to the container's name; the standalone server listens on HOSTNAME.
        'ENV HOSTNAME=0.0.0.0',
        `ENV PORT=${plan.port}`,
        'COPY --from=build --chown=node:node /app/.next/standalone ./',
        'COPY --from=build --chown=node:node /app/.next/static ./.next/static',
        'COPY --from=build --chown=node:node /app/public ./public',
        `EXPOSE ${plan.port}`,
        'USER node',
        'CMD ["node", "server.js"]',
      );
      return `${lines.join('\n')}\n`;
    }
    lines.push(`ENV PORT=${plan.port}`, 'ENV HOST=0.0.0.0', `EXPOSE ${plan.port}`, 'USER node', `CMD ["sh", "-c", ${JSON.stringify(plan.start)}]`);
    return `${lines.join('\n')}\n`;
  }
  // Static: the output directory only, served by nginx as the router serves it (static-site.ts). No
  // output where the plan expects one fails the build, as it does locally.
  const candidates = plan.outputDir === null ? STATIC_OUTPUT_CANDIDATES.join(' ') : shellQuote(plan.outputDir);
  const missing = `BUILD_OUTPUT_MISSING: no index.html in ${plan.outputDir ?? STATIC_OUTPUT_CANDIDATES.join(', ')}; ${plan.outputHint ?? ''}`;
  lines.push(
    `RUN mkdir /site && for d in ${candidates}; do if [ -f "$d/index.html" ]; then cp -r "$d"/. /site/ && break; fi; done && rm -f /site/Dockerfile && if [ ! -f /site/index.html ]; then echo ${shellQuote(missing)} >&2; exit 1; fi`,
    // The site's _redirects and _headers as nginx configuration, by the same parse the local router
    // uses (static-rules.ts); rules left out are printed as warnings in the build log.
    `RUN node -e ${shellQuote(staticRulesScript({ revalidate: REVALIDATE_CACHE_CONTROL, immutable: IMMUTABLE_CACHE_CONTROL }))} /site /zepid-rules`,
    ...staticImageStage({ from: 'build', siteDir: '/site', rulesDir: '/zepid-rules', port: plan.port }),
  );
  return `${lines.join('\n')}\n`;
}
