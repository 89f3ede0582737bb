import { orgStorageKey } from '@zepid/core';
import type { SqliteDatabase } from './database.ts';

/**
 * Stores a source manifest (the `manifests` table, keyed by org key and deployment id) inside the
 * caller's transaction: the artifact store's putSource, and the intake's submit with the record.
 */
export function insertManifest(db: SqliteDatabase, orgId: string, deploymentId: string, manifest: Buffer): void {
  db.connection
    .prepare('INSERT INTO manifests (org_key, deployment_id, data) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET data = excluded.data')
    .run(orgStorageKey(orgId), deploymentId, manifest);
}
