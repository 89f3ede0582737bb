import { DeployError } from '@zepid/core';
import type { SqliteDatabase } from '../sqlite/database.ts';

/** A reserved range of numeric ids, inclusive; no /etc/passwd entry is needed for any of them. */
export interface IdRange {
  first: number;
  last: number;
}

/** Parses `first-last` (LOCAL_UID_RANGE). */
export function parseIdRange(setting: string): IdRange {
  const match = /^(\d+)-(\d+)$/.exec(setting.trim());
  const first = Number(match?.[1]);
  const last = Number(match?.[2]);
  // 0 is root and 2^32-1 is (uid_t)-1, "no change" to setresuid: neither may ever be handed out.
  if (match === null || !(first >= 1 && first <= last && last < 2 ** 32 - 1)) {
    throw new Error(`invalid id range "${setting}": expected first-last with 1 <= first <= last < 4294967295`);
  }
  return { first, last };
}

/**
 * Numeric ids kept in the embedded database: each key (an app, a project) gets one id from the range
 * the first time it is asked for, and the same id ever after (worker restarts included). Keys share
 * one sequence, so an app's uid never equals another project's gid. An id is handed out again only
 * after `releaseApp`, which the worker's delete-app job calls once the app's processes, images,
 * revisions and npm cache are gone (isolation.ts `release`): the app's uid, and its project's gid
 * when the project has no other app holding a uid.
 */
export class TenantIds {
  private readonly db: SqliteDatabase;
  private readonly range: IdRange;
  private opened = false;

  constructor(db: SqliteDatabase, range: IdRange) {
    this.db = db;
    this.range = range;
  }

  /** The id of `key`, allocated on first use (lowest free id of the range). */
  idOf(key: string): number {
    return this.idsOf([key])[0] ?? 0;
  }

  /**
   * The ids of `keys` (each allocated on first use), in one transaction: an app's uid and its
   * project's gid are taken together, so `releaseApp` on another process sees both or neither.
   */
  idsOf(keys: readonly string[]): number[] {
    this.open();
    return this.db.transaction(() => keys.map((key) => this.allocate(key)));
  }

  private allocate(key: string): number {
    {
      const db = this.db.connection;
      const existing = db.prepare('SELECT id FROM tenant_ids WHERE key = ?').get(key) as { id: number } | undefined;
      if (existing !== undefined) return existing.id;
      const { first, last } = this.range;
      // The lowest id of the range nobody holds: `first` itself, or one above a held id.
      const free = db
        .prepare(
          `SELECT candidate FROM (
             SELECT ? AS candidate
             UNION ALL SELECT id + 1 FROM tenant_ids WHERE id >= ? AND id < ?
           ) WHERE candidate NOT IN (SELECT id FROM tenant_ids) ORDER BY candidate LIMIT 1`,
        )
        .get(first, first, last) as { candidate: number } | undefined;
      if (free === undefined) {
        throw new DeployError('DEPENDENCY_UNAVAILABLE', `Every id of LOCAL_UID_RANGE (${first}-${last}) is in use: widen the range`);
      }
      db.prepare('INSERT INTO tenant_ids (key, id) VALUES (?, ?)').run(key, free.candidate);
      return free.candidate;
    }
  }

  /** The id `key` holds; null when it holds none (nothing is allocated). */
  existing(key: string): number | null {
    this.open();
    const row = this.db.connection.prepare('SELECT id FROM tenant_ids WHERE key = ?').get(key) as { id: number } | undefined;
    return row?.id ?? null;
  }

  /** Frees the id of `key`: the caller makes sure no process and no file of that id remains. */
  release(key: string): void {
    this.open();
    this.db.transaction(() => this.db.connection.prepare('DELETE FROM tenant_ids WHERE key = ?').run(key));
  }

  /**
   * App deletion, in one transaction: frees the app's id (`appKey`) and, when none of `siblingKeys`
   * (the project's other apps) holds an id, the project's (`projectKey`) too. An allocation of a
   * sibling (`idsOf`, its uid and the gid together) either ran before, and keeps the gid, or runs
   * after, and allocates a gid anew. Returns what it freed.
   */
  releaseApp(appKey: string, projectKey: string, siblingKeys: readonly string[]): { app: number | null; project: number | null } {
    this.open();
    return this.db.transaction(() => {
      const db = this.db.connection;
      const idOf = (key: string) => (db.prepare('SELECT id FROM tenant_ids WHERE key = ?').get(key) as { id: number } | undefined)?.id ?? null;
      const app = idOf(appKey);
      db.prepare('DELETE FROM tenant_ids WHERE key = ?').run(appKey);
      if (siblingKeys.some((key) => idOf(key) !== null)) return { app, project: null };
      const project = idOf(projectKey);
      db.prepare('DELETE FROM tenant_ids WHERE key = ?').run(projectKey);
      return { app, project };
    });
  }

  close(): void {
    if (!this.opened) return;
    this.opened = false;
    this.db.close();
  }

  private open(): void {
    if (this.opened) return;
    this.db.open();
    this.opened = true;
  }
}
