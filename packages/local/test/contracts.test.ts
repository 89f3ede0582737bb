import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { artifactContract, queueContract, secretContract, storeContract } from '@zepid/testkit';
import { FileSecretStore, FsArtifactStore, SqliteDatabase, SqliteDeploymentStore, SqliteJobQueue } from '../src/index.ts';

async function tempDir() {
  const dir = await mkdtemp(join(tmpdir(), 'zepid-local-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

storeContract('SQLite', async () => {
  const { dir, remove } = await tempDir();
  const store = new SqliteDeploymentStore(new SqliteDatabase(join(dir, 'zepid.db')));
  await store.start();
  return {
    store,
    dispose: async () => {
      await store.close();
      await remove();
    },
  };
});

queueContract('SQLite', async (options) => {
  const { dir, remove } = await tempDir();
  const queue = new SqliteJobQueue(new SqliteDatabase(join(dir, 'zepid.db')), options);
  await queue.start();
  return {
    queue,
    dispose: async () => {
      await queue.close();
      await remove();
    },
  };
});

artifactContract('files', async () => {
  const { dir, remove } = await tempDir();
  const artifacts = new FsArtifactStore(dir, new SqliteDatabase(join(dir, 'manifests.db')), { objectTouchAfterMs: 0 });
  await artifacts.start();
  return { artifacts, dispose: remove };
});

secretContract('encrypted file', async () => {
  const { dir, remove } = await tempDir();
  const secrets = new FileSecretStore(join(dir, 'secrets'));
  await secrets.start();
  return { secrets, dispose: remove };
});
