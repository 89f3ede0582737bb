import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { artifactContract, queueContract, queueHarnessOf, secretContract, storeContract, streamLeaseContract, webhookContract } from '@zepid/testkit';
import { FileSecretStore, FsArtifactStore, SqliteDatabase, SqliteDeploymentStore, SqliteJobQueue, SqliteStreamLeaseStore, SqliteWebhookStore } from '../src/index.ts';

async function tempDir() {
  const dir = await mkdtemp(join(tmpdir(), 'zepid-local-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

storeContract('SQLite', async () => {
  const { dir, remove } = await tempDir();
  const db = new SqliteDatabase(join(dir, 'zepid.db'));
  const store = new SqliteDeploymentStore(db);
  const webhooks = new SqliteWebhookStore(db);
  await store.start();
  await webhooks.start();
  return {
    store,
    webhooks,
    dispose: async () => {
      await webhooks.close();
      await store.close();
      await remove();
    },
  };
});

streamLeaseContract('SQLite', async () => {
  const { dir, remove } = await tempDir();
  const leases = new SqliteStreamLeaseStore(new SqliteDatabase(join(dir, 'zepid.db')));
  await leases.start();
  return {
    leases,
    dispose: async () => {
      await leases.close();
      await remove();
    },
  };
});

webhookContract('SQLite', async () => {
  const { dir, remove } = await tempDir();
  const db = new SqliteDatabase(join(dir, 'zepid.db'));
  const store = new SqliteDeploymentStore(db);
  const webhooks = new SqliteWebhookStore(db);
  await store.start();
  await webhooks.start();
  return {
    store,
    webhooks,
    dispose: async () => {
      await webhooks.close();
      await store.close();
      await remove();
    },
  };
});

queueContract('SQLite', async ({ notificationOnly: _always, ...options }) => {
  const { dir, remove } = await tempDir();
  // Notification only, in every test: no polling to fall back on; receivers learn of jobs from the
  // doorbell and their exact sleep until the next scheduled job or expiring lock, or not at all.
  // Each client has its own database connection and doorbell: a peer reaches the receiver only through
  // the file, as another process does.
  const open = async () => {
    const queue = new SqliteJobQueue(new SqliteDatabase(join(dir, 'zepid.db')), { ...options, fallbackPollMs: 600_000 });
    await queue.start();
    return queue;
  };
  return queueHarnessOf(open, remove);
});

artifactContract('files', async () => {
  const { dir, remove } = await tempDir();
  const artifacts = new FsArtifactStore(dir, new SqliteDatabase(join(dir, 'manifests.db')), { objectTouchAfterMs: 0 });
  const hourly = new FsArtifactStore(dir, new SqliteDatabase(join(dir, 'manifests.db')));
  await artifacts.start();
  await hourly.start();
  return {
    artifacts,
    hourly,
    dispose: async () => {
      await hourly.close();
      await artifacts.close();
      await remove();
    },
  };
});

secretContract('encrypted file', async () => {
  const { dir, remove } = await tempDir();
  const secrets = new FileSecretStore(join(dir, 'secrets'));
  await secrets.start();
  return { secrets, dispose: remove };
});
