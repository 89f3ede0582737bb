import { afterEach, describe, expect, it } from 'vitest';
import type { DeploymentRecord, StoredObject } from '@zepid/core';
import { sha256Hex } from '@zepid/core';
import type { WorkerHarness } from './harness.ts';
import { createWorkerHarness, eventually } from './harness.ts';

const terminal = (record: DeploymentRecord) => ['completed', 'failed', 'cancelled'].includes(record.status);

/** The worker reads a deployment's source from its manifest and the org's objects, trusting neither blindly. */
describe('worker source loading', () => {
  let h: WorkerHarness;
  afterEach(async () => {
    await h.close();
  });

  const files = { 'index.html': '<h1>hi</h1>', 'about.html': '<p>about</p>' };

  /** Removes the stored object holding `content` of the org, as storage loss would. */
  async function removeObject(orgId: string, content: string): Promise<void> {
    const digest = sha256Hex(content);
    let found: StoredObject | undefined;
    for await (const object of h.adapters.artifacts.listObjects(orgId)) if (object.digest === digest) found = object;
    if (found === undefined) throw new Error('object not stored');
    expect(await h.adapters.artifacts.deleteObject(orgId, digest, found.version)).toBe(true);
  }

  it('completes from the manifest and objects', async () => {
    h = await createWorkerHarness();
    h.consumer().start();
    const record = await h.submit({ files });
    expect((await eventually(() => h.get(record), terminal)).status).toBe('completed');
  });

  it('fails with SOURCE_INVALID naming the file whose stored content was altered', async () => {
    h = await createWorkerHarness();
    const record = await h.submit({ files });
    await removeObject(record.orgId, files['about.html']);
    // The same digest now holds other bytes: what a corrupted blob or file looks like.
    await h.adapters.artifacts.putObject(record.orgId, sha256Hex(files['about.html']), Buffer.from('<p>tampered</p>'));
    h.consumer().start();
    const done = await eventually(() => h.get(record), terminal);
    expect(done.status).toBe('failed');
    expect(done.error).toMatchObject({ code: 'SOURCE_INVALID', step: 'validate', message: expect.stringContaining('about.html is corrupt') });
  });

  it('fails with SOURCE_INVALID naming the file whose content is no longer stored', async () => {
    h = await createWorkerHarness();
    const record = await h.submit({ files });
    await removeObject(record.orgId, files['index.html']);
    h.consumer().start();
    const done = await eventually(() => h.get(record), terminal);
    expect(done.status).toBe('failed');
    expect(done.error).toMatchObject({ code: 'SOURCE_INVALID', step: 'validate', message: expect.stringContaining(`index.html (sha256 ${sha256Hex(files['index.html'])}) is no longer stored`) });
  });
});
