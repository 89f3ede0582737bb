import type { ArtifactStore, SecretStore } from '@zepid/core';
import { newDeploymentId } from '@zepid/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

export interface ArtifactHarness {
  artifacts: ArtifactStore;
  dispose(): Promise<void>;
}

export function artifactContract(name: string, createHarness: () => Promise<ArtifactHarness>): void {
  describe(`ArtifactStore contract: ${name}`, () => {
    let harness: ArtifactHarness;
    let artifacts: ArtifactStore;
    beforeAll(async () => {
      harness = await createHarness();
      artifacts = harness.artifacts;
    });
    afterAll(async () => {
      await harness.dispose();
    });

    it('stores and returns sources and contexts; missing ones read as null', async () => {
      const id = newDeploymentId();
      expect(await artifacts.getSource(id)).toBeNull();
      const bytes = Buffer.from([0, 1, 2, 250, 255]);
      await artifacts.putSource(id, bytes);
      expect(await artifacts.getSource(id)).toEqual(bytes);
      const { uri } = await artifacts.putContext(id, Buffer.from('tar.gz bytes'));
      expect(uri).toContain(id);
      expect((await artifacts.getContext(id))?.toString()).toBe('tar.gz bytes');
      await artifacts.deleteContext(id);
      expect(await artifacts.getContext(id)).toBeNull();
      await artifacts.deleteContext(id);
    });

    it('appends log chunks and reads the whole log or its tail from a line start', async () => {
      const id = newDeploymentId();
      expect(await artifacts.readLog(id)).toBe('');
      expect(await artifacts.readLogTail(id, 100)).toBe('');
      const lines = Array.from({ length: 50 }, (_, i) => `{"n":${i}}\n`);
      for (let i = 0; i < lines.length; i += 10) await artifacts.appendLog(id, lines.slice(i, i + 10).join(''));
      expect(await artifacts.readLog(id)).toBe(lines.join(''));
      const tail = await artifacts.readLogTail(id, 40);
      expect(tail.length).toBeLessThanOrEqual(40);
      expect(tail.startsWith('{"n":')).toBe(true);
      expect(tail.endsWith('{"n":49}\n')).toBe(true);
      // a tail read again after the log grew shows the new lines (nothing stale is kept)
      await artifacts.appendLog(id, '{"n":50}\n');
      expect((await artifacts.readLogTail(id, 40)).endsWith('{"n":50}\n')).toBe(true);
      expect((await artifacts.readLogTail(id, 40)).endsWith('{"n":50}\n')).toBe(true);
      await artifacts.deleteAll(id);
      expect(await artifacts.readLogTail(id, 40)).toBe('');
    });

    it('deletes everything of a deployment and says how much there was', async () => {
      const id = newDeploymentId();
      await artifacts.putSource(id, Buffer.from('s'));
      await artifacts.putContext(id, Buffer.from('c'));
      await artifacts.appendLog(id, 'x\n');
      expect(await artifacts.deleteAll(id)).toBe(3);
      expect(await artifacts.getSource(id)).toBeNull();
      expect(await artifacts.readLog(id)).toBe('');
      expect(await artifacts.deleteAll(id)).toBe(0);
    });

    it('reports itself healthy', async () => {
      expect((await artifacts.health()).status).toBe('healthy');
    });
  });
}

export interface SecretHarness {
  secrets: SecretStore;
  dispose(): Promise<void>;
}

export function secretContract(name: string, createHarness: () => Promise<SecretHarness>): void {
  describe(`SecretStore contract: ${name}`, () => {
    let harness: SecretHarness;
    let secrets: SecretStore;
    beforeAll(async () => {
      harness = await createHarness();
      secrets = harness.secrets;
    });
    afterAll(async () => {
      await harness.dispose();
    });

    it('stores values per deployment, references them without revealing them, and deletes them', async () => {
      const id = newDeploymentId();
      const values = { DATABASE_URL: 'postgres://user:hunter2-long@db/app', API_KEY: 'sk_live_0123456789', under_score: 'plain-but-secret' };
      await secrets.put(id, values);
      expect(await secrets.get(id)).toEqual(values);
      expect(await secrets.get(newDeploymentId())).toEqual({});
      const refs = await secrets.references(id, Object.keys(values));
      expect(Object.keys(refs).sort()).toEqual(Object.keys(values).sort());
      for (const [name, ref] of Object.entries(refs)) expect(ref).not.toContain(values[name as keyof typeof values]);
      await secrets.delete(id);
      expect(await secrets.get(id)).toEqual({});
      await secrets.delete(id);
    });
  });
}
