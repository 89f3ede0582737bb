import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, join, sep } from 'node:path';
import ignore from 'ignore';
import type { Ignore } from 'ignore';
import { UsageError } from './errors.ts';

export interface SourceFile {
  path: string;
  sha256: string;
  size: number;
  /** Read again only when the service asks for the content (it does not have the file yet). */
  absolute: string;
}

export interface WalkResult {
  files: SourceFile[];
  /** Paths left out on purpose, for `--json` and the dry-run listing. */
  skipped: string[];
}

/** Never sent: version control, installed dependencies, local env files (as Vercel leaves them out). */
const ALWAYS_SKIPPED = new Set(['.git', '.hg', '.svn', 'node_modules', '.DS_Store', '.env.local', '.zepid']);
const LOCAL_ENV_FILE = /^\.env\..*\.local$/;
/**
 * Build outputs and caches of a Node project (one with a package.json at its root): the service builds
 * them again. A folder without a package.json is a plain static site, whose `dist/` or `public/` may be
 * the site itself, so nothing is left out there beyond the above.
 */
const BUILD_OUTPUTS = ['dist', 'build', 'out', '.next', '.nuxt', '.output', '.svelte-kit', '.astro', '.vercel', '.netlify', '.turbo', '.cache', '.parcel-cache', 'coverage'];

/** The API's documented limits (README, "Limits"): checked here so that a too-large folder is not uploaded first. */
export const SOURCE_LIMITS = { files: 2000, fileBytes: 5 * 1024 * 1024, totalBytes: 12 * 1024 * 1024 } as const;

async function ignoreFileOf(dir: string, name: string): Promise<string | null> {
  try {
    return await readFile(join(dir, name), 'utf8');
  } catch {
    return null;
  }
}

interface Rules {
  /** Relative to this folder (where the ignore file was), with its own matcher. */
  base: string;
  matcher: Ignore;
}

function ignored(rules: readonly Rules[], relPath: string, isDir: boolean): boolean {
  for (const rule of rules) {
    const inside = rule.base === '' ? relPath : relPath.slice(rule.base.length + 1);
    if (rule.matcher.ignores(isDir ? `${inside}/` : inside)) return true;
  }
  return false;
}

/**
 * Walks a project folder as git would see it: `.gitignore` files at every level and `.zepidignore`
 * (same syntax) apply, never `node_modules`, `.git` or a Node project's build outputs. Symbolic links
 * are followed only to files inside the folder.
 */
export async function walkProject(root: string): Promise<WalkResult> {
  const rootReal = await realpath(root).catch(() => {
    throw new UsageError(`${root}: no such folder`);
  });
  if (!(await stat(rootReal)).isDirectory()) throw new UsageError(`${root} is not a folder`);
  const nodeProject = await stat(join(rootReal, 'package.json')).then((s) => s.isFile(), () => false);
  const files: SourceFile[] = [];
  const skipped: string[] = [];

  const visit = async (dir: string, relDir: string, inherited: readonly Rules[]): Promise<void> => {
    const rules = [...inherited];
    for (const name of ['.gitignore', '.zepidignore']) {
      const text = await ignoreFileOf(dir, name);
      if (text !== null) rules.push({ base: relDir, matcher: ignore().add(text) });
    }
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const entry of entries) {
      const relPath = relDir === '' ? entry.name : `${relDir}/${entry.name}`;
      const absolute = join(dir, entry.name);
      if (ALWAYS_SKIPPED.has(entry.name) || LOCAL_ENV_FILE.test(entry.name) || (nodeProject && relDir === '' && BUILD_OUTPUTS.includes(entry.name))) {
        skipped.push(relPath);
        continue;
      }
      let isDir = entry.isDirectory();
      let isFile = entry.isFile();
      let target = absolute;
      if (entry.isSymbolicLink()) {
        const resolved = await realpath(absolute).catch(() => null);
        if (resolved === null || !(resolved === rootReal || resolved.startsWith(rootReal + sep))) {
          skipped.push(relPath);
          continue;
        }
        const info = await lstat(resolved);
        // A link to a folder could loop; a link to a file inside the project is sent as that file.
        isDir = false;
        isFile = info.isFile();
        target = resolved;
      }
      if (ignored(rules, relPath, isDir)) {
        skipped.push(relPath);
        continue;
      }
      if (isDir) await visit(absolute, relPath, rules);
      else if (isFile) {
        const content = await readFile(target);
        if (content.length > SOURCE_LIMITS.fileBytes) {
          throw new UsageError(`${relPath} is ${mib(content.length)}; the service takes files up to ${mib(SOURCE_LIMITS.fileBytes)} (leave it out with .zepidignore)`);
        }
        files.push({ path: relPath, sha256: createHash('sha256').update(content).digest('hex'), size: content.length, absolute: target });
      } else skipped.push(relPath);
    }
  };
  await visit(rootReal, '', []);

  if (files.length === 0) throw new UsageError(`${root} has no files to deploy`);
  if (files.length > SOURCE_LIMITS.files) {
    throw new UsageError(`${root} has ${files.length} files; the service takes ${SOURCE_LIMITS.files} at most (leave some out with .zepidignore)`);
  }
  const total = files.reduce((sum, file) => sum + file.size, 0);
  if (total > SOURCE_LIMITS.totalBytes) {
    throw new UsageError(`${root} holds ${mib(total)} of files; the service takes ${mib(SOURCE_LIMITS.totalBytes)} at most (leave some out with .zepidignore)`);
  }
  return { files, skipped };
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** The request's form of a file's content: UTF-8 text as is, anything else as base64. */
export async function fileContent(file: SourceFile): Promise<{ content: string; encoding: 'utf8' | 'base64' }> {
  const data = await readFile(file.absolute);
  const text = data.toString('utf8');
  if (!text.includes('\0') && Buffer.from(text, 'utf8').equals(data)) return { content: text, encoding: 'utf8' };
  return { content: data.toString('base64'), encoding: 'base64' };
}

const PROJECT_ID = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$/;

/** `--project`, else the package.json name (`@scope/name` → `scope-name`), else the folder's name. */
export async function defaultProjectId(root: string): Promise<string> {
  let name: string | undefined;
  try {
    const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { name?: unknown };
    if (typeof pkg.name === 'string' && pkg.name !== '') name = pkg.name;
  } catch {
    // no package.json, or not JSON: the folder's name
  }
  name ??= basename(await realpath(root));
  const id = name.replace(/^@/, '').replace(/[^A-Za-z0-9._@:-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 128);
  if (!PROJECT_ID.test(id)) throw new UsageError(`cannot derive a project id from ${JSON.stringify(name)}: pass --project`);
  return id;
}
