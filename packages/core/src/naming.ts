import type { Environment } from './glossary.ts';
import { memoized, sha256Hex } from './ids.ts';

/**
 * Names derived from ids, so every step can find what an earlier attempt created.
 *
 * Container Apps names are at most 32 characters of [a-z0-9-], start with a letter and end with a
 * letter or digit, and are unique per resource group, so two orgs with the same projectId must not
 * collide: the project part is a slug of the projectId plus a short hash of (orgId, projectId).
 */
const MAX_APP_NAME = 32;

export function slug(value: string, maxLength: number): string {
  const cleaned = value
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  const withLetter = /^[a-z]/.test(cleaned) ? cleaned : `p-${cleaned}`;
  return withLetter.slice(0, maxLength).replace(/-+$/g, '');
}

// Every POST /deploy needs the key of its project several times (its app name, its queue session):
// remembered rather than hashed again (BENCHMARKS.md).
const projectKeyOf = memoized((key) => sha256Hex(key).slice(0, 32));

/** Stable key of a project within the service; also the queue session id that serialises its deployments. */
export function projectKey(orgId: string, projectId: string): string {
  return projectKeyOf(`${orgId}\u0000${projectId}`);
}

/** `<project>-<environment>`: the Container App name, and the local host name. */
export function appName(orgId: string, projectId: string, environment: Environment): string {
  // A POST /deploy names its app twice (the app record, the deployment): remembered, as the project
  // key is, instead of slugging the projectId again with four regular expressions (BENCHMARKS.md).
  // Ids match ID_PATTERN (no NUL), so the key names one (org, project, environment).
  const key = `${orgId}\u0000${projectId}\u0000${environment}`;
  let name = appNames.get(key);
  if (name === undefined) {
    const hash = projectKey(orgId, projectId).slice(0, 6);
    const budget = MAX_APP_NAME - environment.length - hash.length - 2;
    name = `${slug(projectId, budget)}-${hash}-${environment}`;
    // Forget everything at the cap, as `memoized` does.
    if (appNames.size >= 4096) appNames.clear();
    appNames.set(key, name);
  }
  return name;
}
const appNames = new Map<string, string>();

/**
 * Revision suffix from the deployment id and attempt: Container Apps wants lowercase alphanumerics
 * and `-`. A retry is a new attempt with its own suffix, since an identical template (same suffix,
 * same image) makes Container Apps create no new revision: the retry would wait on the revision the
 * failed attempt stopped. Attempt 1 keeps the plain form.
 */
export function revisionSuffix(deploymentId: string, attempt = 1): string {
  const base = `d${sha256Hex(deploymentId).slice(0, 10)}`;
  return attempt <= 1 ? base : `${base}-a${attempt}`;
}

/** Name of the builder container group (ACI) or work dir of a deployment: `build-<id>`. */
export function sandboxName(deploymentId: string): string {
  return `build-${deploymentId.replace(/^dep_/, '')}`;
}
