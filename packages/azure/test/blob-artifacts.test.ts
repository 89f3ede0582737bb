import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { BlobServiceClient } from '@azure/storage-blob';
import { DeployError, newDeploymentId } from '@zepid/core';
import { artifactContract } from '@zepid/testkit';
import type { AzuriteBlob } from '@zepid/testkit/emulators/azurite.ts';
import { startAzuriteBlob } from '@zepid/testkit/emulators/azurite.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BlobArtifactStoreOptions, BlobConnectionOptions } from '../src/blob/artifacts.ts';
import { BlobArtifactStore, packBlocks } from '../src/blob/artifacts.ts';

const containers = { sources: 'sources', contexts: 'contexts', logs: 'logs' };
const MiB = 1024 * 1024;

/** The contract on a fresh Azurite, the store signed in the way `auth` picks. */
const onAzurite = (auth: (azurite: AzuriteBlob) => BlobConnectionOptions) => async () => {
  const azurite = await startAzuriteBlob();
  const artifacts = new BlobArtifactStore({ ...auth(azurite), containers, createIfMissing: true, objectTouchAfterMs: 0 });
  const hourly = new BlobArtifactStore({ ...auth(azurite), containers, createIfMissing: true });
  await artifacts.start();
  await hourly.start();
  return {
    artifacts,
    hourly,
    dispose: async () => {
      await hourly.close();
      await artifacts.close();
      await azurite.stop();
    },
  };
};

artifactContract('Blob Storage (Azurite, shared key)', onAzurite((azurite) => ({ connectionString: azurite.connectionString })));
artifactContract('Blob Storage (Azurite, Entra token)', onAzurite((azurite) => ({ accountUrl: azurite.accountUrl, credential: azurite.credential })));

describe('BlobArtifactStore on Azurite', () => {
  let azurite: AzuriteBlob;
  let artifacts: BlobArtifactStore;
  let logs: ReturnType<BlobServiceClient['getContainerClient']>;
  const open = async (overrides: Partial<BlobArtifactStoreOptions> = {}) => {
    const store = new BlobArtifactStore({ connectionString: azurite.connectionString, containers, createIfMissing: true, ...overrides });
    await store.start();
    return store;
  };
  const logProperties = (name: string) => logs.getAppendBlobClient(name).getProperties();

  beforeAll(async () => {
    azurite = await startAzuriteBlob();
    artifacts = await open();
    logs = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('logs');
  });
  afterAll(async () => {
    await artifacts.close();
    await azurite.stop();
  });

  it('hands out the context blob URL a builder downloads', async () => {
    const id = newDeploymentId();
    const { uri } = await artifacts.putContext(id, Buffer.from('context'));
    expect(uri).toBe(`${azurite.accountUrl}/contexts/${id}.tar.gz`);
  });

  it('writes a chunk larger than a block as several 4 MiB blocks', async () => {
    const id = newDeploymentId();
    const line = `${'x'.repeat(1023)}\n`;
    const chunk = line.repeat((5 * MiB) / line.length);
    await artifacts.appendLog(id, chunk);
    await artifacts.appendLog(id, 'last\n');
    expect(await artifacts.readLog(id)).toBe(`${chunk}last\n`);
    expect((await logProperties(`${id}.ndjson`)).blobCommittedBlockCount).toBe(3);
    expect(await artifacts.readLogTail(id, 2000)).toBe(`${line}last\n`);
  });

  it('writes appends that arrive together in call order, sharing blocks', async () => {
    const id = newDeploymentId();
    const lines = Array.from({ length: 50 }, (_, i) => `{"n":${i}}\n`);
    await Promise.all(lines.map((line) => artifacts.appendLog(id, line)));
    expect(await artifacts.readLog(id)).toBe(lines.join(''));
    // the first append goes alone; the 49 that queued behind it share one block
    expect((await logProperties(`${id}.ndjson`)).blobCommittedBlockCount).toBeLessThanOrEqual(2);
  });

  it('continues a full log in a sealed chain of blobs, read back as one, in order, by any process', async () => {
    const id = newDeploymentId();
    const small = await open({ maxBlocksPerLogBlob: 3 });
    const lines = Array.from({ length: 7 }, (_, i) => `{"line":${i}}\n`);
    for (const line of lines) await small.appendLog(id, line);
    expect((await logProperties(`${id}.ndjson`)).isSealed).toBe(true);
    expect((await logProperties(`${id}.1.ndjson`)).isSealed).toBe(true);
    expect((await logProperties(`${id}.2.ndjson`)).blobCommittedBlockCount).toBe(1);
    expect(await small.readLog(id)).toBe(lines.join(''));

    // a second process knows nothing of the chain: its appends still land at the end
    const other = await open({ maxBlocksPerLogBlob: 3 });
    await other.appendLog(id, '{"line":7}\n');
    const all = [...lines, '{"line":7}\n'].join('');
    expect(await other.readLog(id)).toBe(all);

    // a tail that spans two blobs starts at a line boundary and ends with the last line
    const tail = await artifacts.readLogTail(id, 30);
    expect(tail).toBe('{"line":6}\n{"line":7}\n');
    expect(await artifacts.readLogTail(id, 10_000)).toBe(all);

    await artifacts.putSource({ orgId: 'org_1', deploymentId: id }, Buffer.from('s'));
    expect(await artifacts.deleteAll({ orgId: 'org_1', deploymentId: id })).toBe(2);
    expect(await artifacts.readLog(id)).toBe('');
    expect(await logs.getBlobClient(`${id}.2.ndjson`).exists()).toBe(false);
  });

  it('refuses to start without its containers when it may not create them', async () => {
    const strict = new BlobArtifactStore({
      connectionString: azurite.connectionString,
      containers: { ...containers, logs: 'absent-logs' },
      createIfMissing: false,
    });
    await expect(strict.start()).rejects.toThrow(/absent-logs does not exist/);
  });

  it('reports an unreachable account as a retryable DEPENDENCY_UNAVAILABLE, and unhealthy', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const down = new BlobArtifactStore({
      connectionString: azurite.connectionString.replace(/127\.0\.0\.1:\d+/, `127.0.0.1:${port}`),
      containers,
      createIfMissing: true,
    });
    const error = await down.start().then(
      () => null,
      (failure: unknown) => failure,
    );
    expect(error).toBeInstanceOf(DeployError);
    expect((error as DeployError).code).toBe('DEPENDENCY_UNAVAILABLE');
    expect((error as DeployError).retryable).toBe(true);
    expect((error as DeployError).message).not.toContain('AccountKey');

    // a started store whose account goes away
    const other = await startAzuriteBlob();
    const orphan = await open({ connectionString: other.connectionString });
    await other.stop();
    const health = await orphan.health();
    expect(health.status).toBe('unhealthy');
    expect(health.detail).toMatch(/could not be reached/);
    const lost = await orphan.readLog(newDeploymentId()).then(
      () => null,
      (failure: unknown) => failure,
    );
    expect((lost as DeployError).code).toBe('DEPENDENCY_UNAVAILABLE');
  });

  it('rejects names that are not deployment ids or digests before touching storage', async () => {
    await expect(artifacts.getSource({ orgId: 'org_1', deploymentId: '../sources/x' })).rejects.toThrow(/not a deployment id/);
    await expect(artifacts.getObject('org_1', '../manifests/x')).rejects.toThrow(/not a sha256 digest/);
    await expect(artifacts.findObjects('org_1', ['A'.repeat(64)])).rejects.toThrow(/not a sha256 digest/);
  });
});

describe('packBlocks', () => {
  const buffers = (...sizes: number[]) => sizes.map((size, i) => Buffer.alloc(size, 97 + i));

  it('keeps appends whole when they fit, and cuts only an append larger than a block', () => {
    expect(packBlocks(buffers(3, 3, 3), 8).map((block) => block.length)).toEqual([6, 3]);
    expect(packBlocks(buffers(2, 20, 2), 8).map((block) => block.length)).toEqual([2, 8, 8, 6]);
    expect(Buffer.concat(packBlocks(buffers(2, 20, 2), 8))).toEqual(Buffer.concat(buffers(2, 20, 2)));
    expect(packBlocks([], 8)).toEqual([]);
  });
});
