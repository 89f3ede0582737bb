import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the infra checks read the files the lead commits, nothing generated. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export function repoPath(...parts: string[]): string {
  return join(ROOT, ...parts);
}

export function readRepoFile(...parts: string[]): string {
  return readFileSync(repoPath(...parts), 'utf8');
}

export function repoFileExists(...parts: string[]): boolean {
  return existsSync(repoPath(...parts));
}

/** Files directly in a repository directory whose names end with `suffix`, sorted. */
export function listRepoFiles(directory: string, suffix: string): string[] {
  return readdirSync(repoPath(directory))
    .filter((name) => name.endsWith(suffix))
    .sort()
    .map((name) => `${directory}/${name}`);
}
