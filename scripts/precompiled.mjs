/* global console, process, URL */
// The services run their TypeScript sources as they are, with Node's type stripping. Stripping at
// run time loads a WebAssembly compiler into every service process (~25 MB of RSS, measured in
// BENCHMARKS.md). This module strips the sources ahead of time instead:
//
//   precompile()   writes, for every module under apps/*/src, packages/*/src and scripts/, the
//                  JavaScript Node's own stripping produces (`stripTypeScriptTypes`, mode "strip":
//                  types become blanks, so lines and columns stay where they were) into
//                  node_modules/.cache/zepid-js/, named by a hash of the module's path and source;
//   register()     installs a module hook (`--import=./scripts/precompiled-loader.mjs`) that serves
//                  a .ts module from that cache when its entry exists, and leaves it to Node
//                  otherwise.
//
// An edited source has another hash, so a stale entry is never served: the edited module is simply
// stripped by Node again until the next precompile(). The module keeps its .ts URL, so
// import.meta.url, relative imports and stack traces are those of the source. This file is
// JavaScript on purpose: loading a .ts loader would load the stripper it avoids.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import module from 'node:module';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CACHE_DIR = join('node_modules', '.cache', 'zepid-js');

/** The modules precompile() strips: the services' sources and the scripts, never tests. */
function sourceFiles(root) {
  const files = [];
  const walk = (dir) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'node_modules' && entry.name !== 'test') walk(path);
      } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
        files.push(path);
      }
    }
  };
  for (const group of ['apps', 'packages']) {
    let names;
    try {
      names = readdirSync(join(root, group));
    } catch {
      continue;
    }
    for (const name of names) walk(join(root, group, name, 'src'));
  }
  walk(join(root, 'scripts'));
  return files;
}

/** The cache entry's name: the module's path inside the project and its source, hashed. */
export function cacheKey(relativePath, source) {
  return createHash('sha256').update(relativePath.split(sep).join('/')).update('\0').update(source).digest('hex');
}

/**
 * Strips every source module whose entry is missing and removes entries no module has any more.
 * Returns how many were compiled, already there, and removed.
 */
export function precompile({ root = ROOT } = {}) {
  if (typeof module.stripTypeScriptTypes !== 'function') throw new Error(`Node ${process.version} cannot strip TypeScript ahead of time (needs module.stripTypeScriptTypes)`);
  const cache = join(root, CACHE_DIR);
  mkdirSync(cache, { recursive: true });
  const existing = new Set(readdirSync(cache));
  const wanted = new Set();
  let compiled = 0;
  let reused = 0;
  // The stripper says it is experimental once per process; it is what Node runs .ts files with
  // anyway, so `npm start` does not print that to a newcomer.
  const emitWarning = process.emitWarning;
  process.emitWarning = (warning, ...rest) => {
    if (!String(warning).includes('stripTypeScriptTypes')) emitWarning.call(process, warning, ...rest);
  };
  try {
    for (const file of sourceFiles(root)) {
      const source = readFileSync(file, 'utf8');
      const name = `${cacheKey(relative(root, file), source)}.js`;
      wanted.add(name);
      if (existing.has(name)) {
        reused += 1;
        continue;
      }
      let output;
      try {
        output = module.stripTypeScriptTypes(source, { mode: 'strip' });
      } catch (error) {
        // Node refuses it at run time as well; the service then reports it where it is imported.
        process.emitWarning(`not precompiled: ${relative(root, file)}: ${error instanceof Error ? error.message : String(error)}`);
        continue;
      }
      // Written aside and renamed: a service starting meanwhile never reads half a module.
      const temporary = join(cache, `${name}.${process.pid}.tmp`);
      writeFileSync(temporary, output);
      renameSync(temporary, join(cache, name));
      compiled += 1;
    }
  } finally {
    process.emitWarning = emitWarning;
  }
  let removed = 0;
  for (const name of existing) {
    if (wanted.has(name) || (name.endsWith('.tmp') && !name.includes(`.${process.pid}.`))) continue;
    rmSync(join(cache, name), { force: true });
    removed += 1;
  }
  return { compiled, reused, removed, cache };
}

/** Serves the project's .ts modules from the cache; anything else, or a miss, goes to Node. */
export function register({ root = ROOT } = {}) {
  if (typeof module.registerHooks !== 'function') return false;
  const cache = join(root, CACHE_DIR);
  module.registerHooks({
    load(url, context, nextLoad) {
      if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
      const path = fileURLToPath(url);
      const inProject = relative(root, path);
      if (inProject.startsWith('..') || inProject.split(sep).includes('node_modules')) return nextLoad(url, context);
      let compiled;
      try {
        compiled = readFileSync(join(cache, `${cacheKey(inProject, readFileSync(path, 'utf8'))}.js`), 'utf8');
      } catch {
        return nextLoad(url, context);
      }
      // Every package of the project is "type": "module" (a test checks it).
      return { format: 'module', source: compiled, shortCircuit: true };
    },
  });
  return true;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const result = precompile();
  console.log(`precompiled ${result.compiled} modules (${result.reused} unchanged, ${result.removed} stale removed) into ${result.cache}`);
}
