import type { AppRef, ArtifactStore, SecretStore, StoredObject } from '@zepid/core';
import { appName, encodeSourceManifest, newDeploymentId, OBJECT_RETENTION, removeAppObjects, sha256Hex, sweepObjects } from '@zepid/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

export interface ArtifactHarness {
  /** Built with `objectTouchAfterMs: 0`, so every `findObjects` counts as a use that changes an object's version. */
  artifacts: ArtifactStore;
  /** The same storage opened with the default OBJECT_RETENTION.touchAfterMs: a lookup of a recently used object changes nothing. */
  hourly: ArtifactStore;
  dispose(): Promise<void>;
}

let orgCounter = 0;
/** A fresh org per test: object listings start empty. */
const newOrg = () => `org-contract-${process.pid}-${(orgCounter += 1)}`;
/** A fresh app of a fresh org (or of `projectId` in a fresh org). */
const newApp = (projectId = `proj-${(orgCounter += 1)}`): AppRef => {
  const orgId = newOrg();
  return { orgId, projectId, environment: 'development', appName: appName(orgId, projectId, 'development') };
};
const content = (text: string) => ({ data: Buffer.from(text), digest: sha256Hex(text) });

async function listed(artifacts: ArtifactStore, orgId: string): Promise<StoredObject[]> {
  const objects: StoredObject[] = [];
  for await (const object of artifacts.listObjects(orgId)) objects.push(object);
  return objects.sort((a, b) => (a.digest < b.digest ? -1 : 1));
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

    it('stores and returns source manifests per org, and contexts; missing ones read as null', async () => {
      const id = newDeploymentId();
      const [orgId, otherOrg] = [newOrg(), newOrg()];
      expect(await artifacts.getSource({ orgId, deploymentId: id })).toBeNull();
      expect(await artifacts.listSources(orgId)).toEqual([]);
      const bytes = Buffer.from([0, 1, 2, 250, 255]);
      await artifacts.putSource({ orgId, deploymentId: id }, bytes);
      expect(await artifacts.getSource({ orgId, deploymentId: id })).toEqual(bytes);
      expect(await artifacts.listSources(orgId)).toEqual([id]);
      expect(await artifacts.getSource({ orgId: otherOrg, deploymentId: id })).toBeNull();
      expect(await artifacts.listSources(otherOrg)).toEqual([]);
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
      await artifacts.deleteAll({ orgId: newOrg(), deploymentId: id });
      expect(await artifacts.readLogTail(id, 40)).toBe('');
    });

    it('reads a log from an offset: complete lines only, and the offset to continue from', async () => {
      const id = newDeploymentId();
      expect(await artifacts.readLogFrom(id, 0)).toEqual({ text: '', next: 0 });
      await artifacts.appendLog(id, '{"n":0}\n{"n":1}\n');
      const first = await artifacts.readLogFrom(id, 0);
      expect(first).toEqual({ text: '{"n":0}\n{"n":1}\n', next: 16 });
      expect(await artifacts.readLogFrom(id, first.next)).toEqual({ text: '', next: 16 });
      // a line not yet ended is left for the next read
      await artifacts.appendLog(id, '{"n":2}\n{"n":');
      expect(await artifacts.readLogFrom(id, first.next)).toEqual({ text: '{"n":2}\n', next: 24 });
      await artifacts.appendLog(id, '3}\n');
      expect(await artifacts.readLogFrom(id, 24)).toEqual({ text: '{"n":3}\n', next: 32 });
      await artifacts.deleteAll({ orgId: newOrg(), deploymentId: id });
    });

    it('stores each object once per org, finds only its own org\'s, and reads them back', async () => {
      const [orgId, otherOrg] = [newOrg(), newOrg()];
      const a = content('alpha');
      const b = content('bravo!');
      expect(await artifacts.findObjects(orgId, [a.digest, b.digest])).toEqual(new Map());
      expect(await artifacts.putObject(orgId, a.digest, a.data)).toBe(true);
      expect(await artifacts.putObject(orgId, a.digest, a.data)).toBe(false);
      expect(await artifacts.findObjects(orgId, [a.digest, b.digest, a.digest])).toEqual(new Map([[a.digest, 5]]));
      expect(await artifacts.getObject(orgId, a.digest)).toEqual(a.data);
      expect(await artifacts.getObject(orgId, b.digest)).toBeNull();
      // Another org cannot read it, nor learn that it exists; its own copy is a separate object.
      expect(await artifacts.findObjects(otherOrg, [a.digest])).toEqual(new Map());
      expect(await artifacts.getObject(otherOrg, a.digest)).toBeNull();
      expect(await artifacts.putObject(otherOrg, a.digest, a.data)).toBe(true);
      expect((await listed(artifacts, orgId)).map((object) => object.digest)).toEqual([a.digest]);
    });

    it('stores concurrent writes of one new object once', async () => {
      const orgId = newOrg();
      const a = content('written by two requests at once');
      const results = await Promise.all([artifacts.putObject(orgId, a.digest, a.data), artifacts.putObject(orgId, a.digest, a.data)]);
      expect(results.filter(Boolean).length).toBeGreaterThanOrEqual(1);
      expect(await artifacts.getObject(orgId, a.digest)).toEqual(a.data);
      expect(await listed(artifacts, orgId)).toHaveLength(1);
    });

    it('refuses to return an object whose bytes do not match its digest (SOURCE_INVALID)', async () => {
      const orgId = newOrg();
      // putObject trusts the caller's digest; a wrong one stands in for bytes altered in storage.
      const digest = sha256Hex('what was meant');
      await artifacts.putObject(orgId, digest, Buffer.from('what is there'));
      await expect(artifacts.getObject(orgId, digest)).rejects.toMatchObject({ code: 'SOURCE_INVALID' });
    });

    it('deletes a listed object only if it was not used since it was listed', async () => {
      const orgId = newOrg();
      const a = content('used after the listing');
      const b = content('left alone');
      await artifacts.putObject(orgId, a.digest, a.data);
      await artifacts.putObject(orgId, b.digest, b.data);
      const before = await listed(artifacts, orgId);
      expect(before).toHaveLength(2);
      expect(before).toEqual(expect.arrayContaining([expect.objectContaining({ digest: a.digest, size: a.data.length }), expect.objectContaining({ digest: b.digest, size: b.data.length })]));
      await artifacts.findObjects(orgId, [a.digest]);
      const versionOf = (digest: string) => before.find((object) => object.digest === digest)?.version ?? '';
      expect(await artifacts.deleteObject(orgId, a.digest, versionOf(a.digest))).toBe(false);
      expect(await artifacts.getObject(orgId, a.digest)).toEqual(a.data);
      expect(await artifacts.deleteObject(orgId, b.digest, versionOf(b.digest))).toBe(true);
      expect(await artifacts.getObject(orgId, b.digest)).toBeNull();
      expect(await artifacts.deleteObject(orgId, b.digest, versionOf(b.digest))).toBe(false);
    });

    it('sweeps unreferenced objects once unused past the grace period, keeping referenced ones and other orgs\'', async () => {
      const [orgId, otherOrg] = [newOrg(), newOrg()];
      const kept = content('named by a manifest');
      const garbage = content('named by nothing');
      for (const object of [kept, garbage]) await artifacts.putObject(orgId, object.digest, object.data);
      await artifacts.putObject(otherOrg, garbage.digest, garbage.data);
      const manifest = encodeSourceManifest({ files: [{ path: 'index.html', sha256: kept.digest, size: kept.data.length }], historyMessages: [] });
      await artifacts.putSource({ orgId, deploymentId: newDeploymentId() }, manifest);

      // Recently used: kept, referenced or not.
      expect(await sweepObjects(artifacts, orgId, new Date())).toEqual({ objects: 0, bytes: 0 });
      const later = new Date(Date.now() + OBJECT_RETENTION.graceMs + 60_000);
      expect(await sweepObjects(artifacts, orgId, later)).toEqual({ objects: 1, bytes: garbage.data.length });
      expect(await artifacts.getObject(orgId, garbage.digest)).toBeNull();
      expect(await artifacts.getObject(orgId, kept.digest)).toEqual(kept.data);
      expect(await artifacts.getObject(otherOrg, garbage.digest)).toEqual(garbage.data);
    });

    it('marks objects so that the next lookup changes their version, however recently they were used', async () => {
      const { hourly } = harness;
      const orgId = newOrg();
      const a = content('marked, then looked up');
      const b = content('marked, left alone');
      for (const object of [a, b]) await hourly.putObject(orgId, object.digest, object.data);
      // Used just now: a lookup leaves the version alone (the hourly refresh).
      const before = await listed(hourly, orgId);
      await hourly.findObjects(orgId, [a.digest]);
      expect(await listed(hourly, orgId)).toEqual(before);

      const marked = await hourly.expireObjects(orgId, [a.digest, b.digest, content('never stored').digest, a.digest]);
      expect(marked.map((object) => [object.digest, object.size]).sort()).toEqual([[a.digest, a.data.length], [b.digest, b.data.length]].sort());
      // Still within the sweep's grace.
      for (const object of marked) expect(Date.now() - object.lastUsed.getTime()).toBeLessThan(OBJECT_RETENTION.graceMs);
      expect(await hourly.findObjects(orgId, [a.digest])).toEqual(new Map([[a.digest, a.data.length]]));
      const versionOf = (digest: string) => marked.find((object) => object.digest === digest)?.version ?? '';
      expect(await hourly.deleteObject(orgId, a.digest, versionOf(a.digest))).toBe(false);
      expect(await hourly.getObject(orgId, a.digest)).toEqual(a.data);
      expect(await hourly.deleteObject(orgId, b.digest, versionOf(b.digest))).toBe(true);
      expect(await hourly.getObject(orgId, b.digest)).toBeNull();
    });

    it('a deleted app\'s objects go at once, but not one another app names or looks up meanwhile (removeAppObjects)', async () => {
      const { hourly } = harness;
      const orgId = newOrg();
      const shared = content('<h1>same file in two apps</h1>');
      const uploading = content('another app is storing a deployment that names this');
      const own = content('only the deleted app');
      const later = content('named by a manifest written during the wait');
      for (const object of [shared, uploading, own, later]) await hourly.putObject(orgId, object.digest, object.data);
      const manifest = (...objects: { digest: string; data: Buffer }[]) =>
        encodeSourceManifest({ files: objects.map((object, index) => ({ path: `f${index}`, sha256: object.digest, size: object.data.length })), historyMessages: [] });
      const [deleted1, deleted2, other, writtenLater] = [newDeploymentId(), newDeploymentId(), newDeploymentId(), newDeploymentId()];
      await hourly.putSource({ orgId, deploymentId: deleted1 }, manifest(shared, uploading, own));
      await hourly.putSource({ orgId, deploymentId: deleted2 }, manifest(own, later));
      await hourly.putSource({ orgId, deploymentId: other }, manifest(shared));

      let waited = -1;
      const result = await removeAppObjects(hourly, orgId, [deleted1, deleted2], {
        uploadWindowMs: 1234,
        wait: async (ms) => {
          waited = ms;
          // Meanwhile another app's POST /deploy looks up `uploading` (its manifest is not written yet: the
          // job cannot see it), and another stores a manifest naming `later`.
          expect((await hourly.findObjects(orgId, [uploading.digest])).has(uploading.digest)).toBe(true);
          await hourly.putSource({ orgId, deploymentId: writtenLater }, manifest(later));
        },
      });
      expect(waited).toBe(1234);
      expect(result).toEqual({ objects: 1, bytes: own.data.length, kept: 3 });
      expect(await hourly.getObject(orgId, own.digest)).toBeNull();
      for (const object of [shared, uploading, later]) expect(await hourly.getObject(orgId, object.digest)).toEqual(object.data);
      // Nothing of its own stored: nothing marked, no wait.
      waited = -1;
      expect(await removeAppObjects(hourly, orgId, [newDeploymentId()], { uploadWindowMs: 1, wait: async (ms) => void (waited = ms) })).toEqual({ objects: 0, bytes: 0, kept: 0 });
      expect(waited).toBe(-1);
    });

    it('deletes everything of a deployment but its objects, and says how much there was', async () => {
      const id = newDeploymentId();
      const ref = { orgId: newOrg(), deploymentId: id };
      const a = content('kept for other deployments');
      await artifacts.putObject(ref.orgId, a.digest, a.data);
      await artifacts.putSource(ref, Buffer.from('s'));
      await artifacts.putContext(id, Buffer.from('c'));
      await artifacts.appendLog(id, 'x\n');
      expect(await artifacts.deleteAll(ref)).toBe(3);
      expect(await artifacts.getSource(ref)).toBeNull();
      expect(await artifacts.listSources(ref.orgId)).toEqual([]);
      expect(await artifacts.readLog(id)).toBe('');
      expect(await artifacts.getObject(ref.orgId, a.digest)).toEqual(a.data);
      expect(await artifacts.deleteAll(ref)).toBe(0);
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

    // App env values (issue 12): an app's current set, beside (not instead of) each deployment's copy.
    it('keeps an app\'s current env values: a put replaces the whole set, {} removes it, and a delete is idempotent', async () => {
      const app = newApp();
      expect(await secrets.getAppEnv(app)).toEqual({});
      await secrets.putAppEnv(app, { GREETING: 'hello-secret-1', API_KEY: 'sk_live_app_0123456789' });
      expect(await secrets.getAppEnv(app)).toEqual({ GREETING: 'hello-secret-1', API_KEY: 'sk_live_app_0123456789' });
      // replaces, not merges: API_KEY is gone, OTHER is new
      await secrets.putAppEnv(app, { GREETING: 'hello-secret-2', OTHER: 'o' });
      expect(await secrets.getAppEnv(app)).toEqual({ GREETING: 'hello-secret-2', OTHER: 'o' });
      await secrets.putAppEnv(app, {});
      expect(await secrets.getAppEnv(app)).toEqual({});
      await secrets.putAppEnv(app, { A: 'a' });
      await secrets.deleteAppEnv(app);
      expect(await secrets.getAppEnv(app)).toEqual({});
      await secrets.deleteAppEnv(app);
      await secrets.deleteAppEnv(newApp());
      // gone values can be set again
      await secrets.putAppEnv(app, { A: 'again' });
      expect(await secrets.getAppEnv(app)).toEqual({ A: 'again' });
      await secrets.deleteAppEnv(app);
    });

    it('keeps each app\'s env values apart: other apps, other orgs, and deployments\' copies', async () => {
      const app = newApp();
      // the same project in another environment, and the same project and environment in another org
      const otherEnvironment = { ...app, environment: 'production' as const, appName: appName(app.orgId, app.projectId, 'production') };
      // (an appName embeds a hash of its org, so two orgs' names differ; the store must not rely on it)
      const sameNameOtherOrg = { ...app, orgId: newOrg() };
      const deploymentId = newDeploymentId();
      await secrets.put(deploymentId, { GREETING: 'deployment-copy' });
      await secrets.putAppEnv(app, { GREETING: 'mine' });
      await secrets.putAppEnv(otherEnvironment, { GREETING: 'production' });
      await secrets.putAppEnv(sameNameOtherOrg, { GREETING: 'other-org' });
      expect(await secrets.getAppEnv(app)).toEqual({ GREETING: 'mine' });
      expect(await secrets.getAppEnv(otherEnvironment)).toEqual({ GREETING: 'production' });
      expect(await secrets.getAppEnv(sameNameOtherOrg)).toEqual({ GREETING: 'other-org' });
      expect(await secrets.get(deploymentId)).toEqual({ GREETING: 'deployment-copy' });
      await secrets.deleteAppEnv(app);
      expect(await secrets.getAppEnv(app)).toEqual({});
      expect(await secrets.getAppEnv(otherEnvironment)).toEqual({ GREETING: 'production' });
      expect(await secrets.getAppEnv(sameNameOtherOrg)).toEqual({ GREETING: 'other-org' });
      expect(await secrets.get(deploymentId)).toEqual({ GREETING: 'deployment-copy' });
      await secrets.delete(deploymentId);
      expect(await secrets.getAppEnv(otherEnvironment)).toEqual({ GREETING: 'production' });
      await secrets.deleteAppEnv(otherEnvironment);
      await secrets.deleteAppEnv(sameNameOtherOrg);
    });
  });
}
