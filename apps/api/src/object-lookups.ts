import type { ArtifactStore } from '@zepid/core';

/** Found objects remembered at most (oldest dropped first): ~100 B each, so ~1 MB at most. */
const MAX_ENTRIES = 10_000;
/** The longest a lookup is reused; a tenth of the upload window when that is shorter. */
const MAX_REUSE_MS = 1_000;

interface Found {
  /** `performance.now()` before the lookup that found it. */
  at: number;
  size: number;
}

/**
 * The objects POST /deploy found stored lately, per org and digest, so that the deployments of a
 * burst (a CI matrix, an AI builder's retries, fifty clients at once) look each file's object up
 * once a second instead of once per request: on local disk a `stat` per file, on Blob Storage a
 * request per file.
 *
 * Why a reused lookup is as safe as a new one: the only deletions of an object are the sweep (an
 * object unused for a day) and the delete-app job (core's `removeAppObjects`), and both rest on the
 * time of the lookup, not on who made it. A lookup counts as a use (it refreshes an object older than
 * an hour or marked for deletion), so the sweep cannot pick an object found a second ago; and the
 * delete-app job waits the upload window after marking before it reads manifests, which the
 * request must store within the window *counted from its oldest lookup*: `lookUp` returns that time
 * (`lookedUpAt`), and DeploymentService checks again past it (checkObjectsStill, uncached). So a
 * lookup reused within `reuseMs` is a lookup made `reuseMs` earlier, with the window shortened by as
 * much. Only found objects are kept: a missing one is looked up every time. A request that uploads
 * an object does not add it here (its next use looks it up, and refreshes it, as before).
 */
export class ObjectLookups {
  private readonly artifacts: ArtifactStore;
  private readonly reuseMs: number;
  private readonly found = new Map<string, Found>();

  /** `uploadWindowMs`: OBJECT_UPLOAD_WINDOW_MS; lookups are reused for a tenth of it, at most a second (none at 0). */
  constructor(artifacts: ArtifactStore, uploadWindowMs: number) {
    this.artifacts = artifacts;
    this.reuseMs = Math.min(MAX_REUSE_MS, uploadWindowMs / 10);
  }

  /**
   * Size of each of `digests` the org has stored (absent ones left out), as `findObjects` answers,
   * with `lookedUpAt`: the `performance.now()` before the oldest lookup the answer rests on.
   */
  async lookUp(orgId: string, digests: readonly string[]): Promise<{ found: Map<string, number>; lookedUpAt: number }> {
    const now = performance.now();
    const found = new Map<string, number>();
    let lookedUpAt = now;
    let unknown: string[] | null = null;
    for (const digest of digests) {
      const known = this.reuseMs > 0 ? this.found.get(keyOf(orgId, digest)) : undefined;
      if (known !== undefined && now - known.at <= this.reuseMs) {
        found.set(digest, known.size);
        if (known.at < lookedUpAt) lookedUpAt = known.at;
      } else (unknown ??= []).push(digest);
    }
    if (unknown === null) return { found, lookedUpAt };
    const looked = await this.artifacts.findObjects(orgId, unknown);
    for (const [digest, size] of looked) {
      found.set(digest, size);
      if (this.reuseMs > 0) this.remember(keyOf(orgId, digest), { at: now, size });
    }
    return { found, lookedUpAt };
  }

  private remember(key: string, entry: Found): void {
    // Re-inserted, so the map's order stays oldest first (as the API's other bounded maps drop theirs).
    this.found.delete(key);
    if (this.found.size >= MAX_ENTRIES) this.found.delete(this.found.keys().next().value ?? '');
    this.found.set(key, entry);
  }
}

/** Org ids (ID_PATTERN) and digests (hex) hold no newline. */
const keyOf = (orgId: string, digest: string) => `${orgId}\n${digest}`;
