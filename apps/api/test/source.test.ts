import { rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { decodeSourceManifest, orgStorageKey, sha256Hex } from '@zepid/core';
import type { Harness } from './harness.ts';
import { auth, createHarness, staticBody } from './harness.ts';

type Org = 'org_456' | 'org_other';
type Entry = { path: string; content?: string; sha256?: string };

const MiB = 1024 * 1024;
const FILES = { 'index.html': '<h1>v1</h1>', 'app.js': 'console.log("hello")', 'style.css': 'body { margin: 0 }' };
const entries = (files: Record<string, string>): Entry[] => Object.entries(files).map(([path, content]) => ({ path, content }));
const bytesOf = (files: Record<string, string>) => Object.values(files).reduce((sum, content) => sum + Buffer.byteLength(content), 0);

describe('content-addressed source', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await createHarness();
  });
  afterEach(async () => {
    await h.close();
  });

  const deploy = (files: Entry[], org: Org = 'org_456', projectId = 'site') =>
    h.app.inject({ method: 'POST', url: '/deploy', headers: auth(org), payload: staticBody({ organizationId: org, projectId, files }) });
  const accepted = async (files: Entry[], org: Org = 'org_456', projectId = 'site') => {
    const response = await deploy(files, org, projectId);
    expect(response.statusCode, response.body).toBe(202);
    return response.json<{ deploymentId: string }>().deploymentId;
  };
  const sourceOf = async (id: string, org: Org = 'org_456') =>
    (await h.app.inject({ url: `/deploy/${id}/status`, headers: auth(org) })).json<{ source: Record<string, unknown> }>().source;
  const objectsOf = async (org: Org) => (await h.artifactFiles()).filter((file) => file.startsWith(`objects/${orgStorageKey(org)}/`));
  const objectPath = (org: Org, content: string) => join(h.dataDir, 'artifacts', 'objects', orgStorageKey(org), sha256Hex(content));
  const nothingNew = async (before: { files: string[]; queued: number }) => {
    expect(await h.artifactFiles()).toEqual(before.files);
    expect((await h.adapters.store.countByStatus('org_456')).queued + (await h.adapters.store.countByStatus('org_other')).queued).toBe(before.queued);
  };
  const snapshot = async () => ({
    files: await h.artifactFiles(),
    queued: (await h.adapters.store.countByStatus('org_456')).queued + (await h.adapters.store.countByStatus('org_other')).queued,
  });

  it('stores each file once: a redeploy of unchanged files stores 0 bytes and has the same source digest', async () => {
    const first = await accepted(entries(FILES));
    const firstSource = await sourceOf(first);
    expect(firstSource).toEqual({ digest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/), fileCount: 3, bytes: bytesOf(FILES), storedFiles: 3, storedBytes: bytesOf(FILES) });
    expect(await objectsOf('org_456')).toHaveLength(3);
    const before = await h.artifactFiles();

    const uploads = vi.spyOn(h.adapters.artifacts, 'putObject');
    const second = await accepted(entries(FILES));
    // Known contents are not even offered to the store (on Blob: not uploaded again).
    expect(uploads).not.toHaveBeenCalled();
    uploads.mockRestore();
    expect(await sourceOf(second)).toEqual({ ...firstSource, storedFiles: 0, storedBytes: 0 });
    // No file was written (the new deployment's manifest is a row of the embedded database).
    expect((await h.artifactFiles()).filter((file) => !before.includes(file))).toEqual([]);
    expect(await h.adapters.artifacts.getSource({ orgId: 'org_456', deploymentId: second })).not.toBeNull();

    const changed = { ...FILES, 'index.html': '<h1>v2!</h1>' };
    const third = await accepted(entries(changed));
    const thirdSource = await sourceOf(third);
    expect(thirdSource).toMatchObject({ fileCount: 3, bytes: bytesOf(changed), storedFiles: 1, storedBytes: Buffer.byteLength('<h1>v2!</h1>') });
    expect(thirdSource.digest).not.toBe(firstSource.digest);

    // Two paths with one content: one object.
    const twins = await accepted([{ path: 'a.txt', content: 'same twice' }, { path: 'b.txt', content: 'same twice' }]);
    expect(await sourceOf(twins)).toMatchObject({ fileCount: 2, storedFiles: 1, storedBytes: 10 });

    const list = (await h.app.inject({ url: '/deploy/project/site', headers: auth('org_456') })).json<{ deployments: { source: unknown }[] }>();
    expect(list.deployments.map((deployment) => deployment.source)).toContainEqual({ ...firstSource, storedFiles: 0, storedBytes: 0 });
  });

  it('takes files given by sha256 alone from what the org stored, under any path', async () => {
    const full = await accepted(entries(FILES));
    const referenced = await accepted([
      { path: 'index.html', sha256: sha256Hex(FILES['index.html']) },
      { path: 'app.js', sha256: sha256Hex(FILES['app.js']) },
      { path: 'style.css', content: FILES['style.css'], sha256: sha256Hex(FILES['style.css']) },
    ]);
    expect(await sourceOf(referenced)).toEqual({ ...(await sourceOf(full)), storedFiles: 0, storedBytes: 0 });

    const moved = await accepted([{ path: 'public/copy.html', sha256: sha256Hex(FILES['index.html']) }, { path: 'new.txt', content: 'new' }]);
    expect(await sourceOf(moved)).toMatchObject({ fileCount: 2, bytes: Buffer.byteLength(FILES['index.html']) + 3, storedFiles: 1, storedBytes: 3 });
    const manifest = await h.adapters.artifacts.getSource({ orgId: 'org_456', deploymentId: moved });
    expect(manifest === null ? null : decodeSourceManifest(manifest).files).toEqual([
      { path: 'public/copy.html', sha256: sha256Hex(FILES['index.html']), size: Buffer.byteLength(FILES['index.html']) },
      { path: 'new.txt', sha256: sha256Hex('new'), size: 3 },
    ]);
  });

  it('answers 400 SOURCE_FILES_MISSING listing every missing file, and stores and queues nothing', async () => {
    await accepted(entries(FILES));
    const before = await snapshot();
    const unknown = sha256Hex('never sent');
    const response = await deploy([
      { path: 'index.html', sha256: sha256Hex(FILES['index.html']) },
      { path: 'lib/missing.js', sha256: unknown },
      { path: 'other.js', sha256: sha256Hex('also never sent') },
      { path: 'brand-new.txt', content: 'would be stored if the request were complete' },
    ]);
    expect(response.statusCode).toBe(400);
    expect(response.json()).toEqual({
      success: false,
      error: 'SOURCE_FILES_MISSING',
      message: expect.stringContaining('2 files'),
      details: { missing: [{ path: 'lib/missing.js', sha256: unknown }, { path: 'other.js', sha256: sha256Hex('also never sent') }] },
      timestamp: expect.any(String),
    });
    await nothingNew(before);

    // The client sends just those with content.
    const retried = await accepted([
      { path: 'index.html', sha256: sha256Hex(FILES['index.html']) },
      { path: 'lib/missing.js', content: 'never sent' },
      { path: 'other.js', content: 'also never sent' },
      { path: 'brand-new.txt', content: 'would be stored if the request were complete' },
    ]);
    expect(await sourceOf(retried)).toMatchObject({ fileCount: 4, storedFiles: 3 });
  });

  it('past OBJECT_UPLOAD_WINDOW_MS, looks its objects up again: one the delete-app job removed meanwhile is SOURCE_FILES_MISSING, nothing queued', async () => {
    await h.close();
    // A window of 0: every request counts as slow and checks again.
    h = await createHarness({ objectUploadWindowMs: 0 });
    await accepted(entries(FILES));
    const before = await snapshot();
    const files = Object.keys(FILES).map((path) => ({ path, sha256: sha256Hex(FILES[path as keyof typeof FILES]) }));
    // The delete job of another app deletes index.html's object after this request found it, before the manifest is read.
    const { artifacts } = h.adapters;
    const putSource = artifacts.putSource.bind(artifacts);
    artifacts.putSource = async (ref, manifest) => {
      await putSource(ref, manifest);
      await rm(objectPath('org_456', FILES['index.html']));
    };
    const response = await deploy(files);
    artifacts.putSource = putSource;
    expect(response.statusCode, response.body).toBe(400);
    expect(response.json()).toMatchObject({ error: 'SOURCE_FILES_MISSING', details: { missing: [{ path: 'index.html', sha256: sha256Hex(FILES['index.html']) }] } });
    expect(await h.adapters.artifacts.listSources('org_456')).toHaveLength(1);
    expect((await h.adapters.store.countByStatus('org_456')).queued).toBe(before.queued);
    // Nothing deleted meanwhile: the second look finds them all.
    const again = await accepted([{ path: 'index.html', content: FILES['index.html'] }, ...files.slice(1)]);
    expect(await sourceOf(again)).toMatchObject({ fileCount: 3, storedFiles: 1 });
  });

  it('looks a found object up once per second of a burst, not once per request; a missing one every time', async () => {
    await accepted(entries(FILES));
    const lookups = vi.spyOn(h.adapters.artifacts, 'findObjects');
    const looked = () => lookups.mock.calls.flatMap(([, digests]) => digests);
    await accepted(entries(FILES));
    expect(looked()).toHaveLength(3);
    // Within the second: the objects found by the request before are not looked up again, only the new file.
    lookups.mockClear();
    const later = await accepted([...entries(FILES), { path: 'new.txt', content: 'new' }]);
    // (The local store's putObject looks the new one up once more itself.)
    expect(new Set(looked())).toEqual(new Set([sha256Hex('new')]));
    expect(await sourceOf(later)).toMatchObject({ fileCount: 4, storedFiles: 1 });
    // A file given by sha256 alone that the org does not have is looked up (and refused) every time.
    lookups.mockClear();
    for (let i = 0; i < 2; i += 1) expect((await deploy([{ path: 'x.txt', sha256: sha256Hex('nobody has this') }])).statusCode).toBe(400);
    expect(looked()).toEqual([sha256Hex('nobody has this'), sha256Hex('nobody has this')]);
    // Another org never gets this org's lookups.
    lookups.mockClear();
    expect((await deploy([{ path: 'index.html', sha256: sha256Hex(FILES['index.html']) }], 'org_other')).statusCode).toBe(400);
    expect(looked()).toEqual([sha256Hex(FILES['index.html'])]);
    // A second later the lookup is made again (and refreshes the object's last use, as every lookup does).
    const real = performance.now.bind(performance);
    const aSecondOn = vi.spyOn(performance, 'now').mockImplementation(() => real() + 1_100);
    lookups.mockClear();
    await accepted(entries(FILES));
    aSecondOn.mockRestore();
    expect(new Set(looked())).toEqual(new Set(Object.values(FILES).map((content) => sha256Hex(content))));
  });

  it('counts the upload window from a reused lookup: past it, the objects are looked up again (uncached) before anything is recorded', async () => {
    const real = performance.now.bind(performance);
    let offset = 0;
    const clock = vi.spyOn(performance, 'now').mockImplementation(() => real() + offset);
    await accepted(entries(FILES));
    const files = Object.keys(FILES).map((path) => ({ path, sha256: sha256Hex(FILES[path as keyof typeof FILES]) }));
    // Looked up here, at t.
    await accepted(files);
    const before = await snapshot();
    const lookups = vi.spyOn(h.adapters.artifacts, 'findObjects');
    // t + 0.9 s: reused. Then the request takes long: its intake runs at t + 10.05 s, past the
    // default window of 10 s counted from t (not from this request's start), and meanwhile the
    // delete-app job of another app removed index.html's object.
    offset = 900;
    const { intake } = h.adapters;
    const submit = intake.submit.bind(intake);
    intake.submit = async (...args) => {
      offset = 10_050;
      await rm(objectPath('org_456', FILES['index.html']), { force: true });
      return submit(...args);
    };
    const response = await deploy(files);
    intake.submit = submit;
    clock.mockRestore();
    expect(response.statusCode, response.body).toBe(400);
    expect(response.json()).toMatchObject({ error: 'SOURCE_FILES_MISSING', details: { missing: [{ path: 'index.html' }] } });
    // The first lookup was reused; the second, past the window, was not.
    expect(lookups.mock.calls.map(([, digests]) => digests.length)).toEqual([3]);
    expect((await h.adapters.store.countByStatus('org_456')).queued).toBe(before.queued);
  });

  it('refuses a reference to another org\'s file exactly as a missing one', async () => {
    await accepted([{ path: 'secret.txt', content: 'org_456 only' }]);
    const before = await snapshot();
    const theirs = await deploy([{ path: 'x.txt', sha256: sha256Hex('org_456 only') }], 'org_other');
    const nobodys = await deploy([{ path: 'x.txt', sha256: sha256Hex('nobody has this') }], 'org_other');
    expect(theirs.statusCode).toBe(400);
    expect(nobodys.statusCode).toBe(400);
    const shape = (body: { details: { missing: { path: string }[] } } & Record<string, unknown>) => ({ ...body, timestamp: null, details: body.details.missing.map((m) => m.path) });
    expect(shape(theirs.json())).toEqual(shape(nobodys.json()));
    expect(theirs.json()).toMatchObject({ error: 'SOURCE_FILES_MISSING', details: { missing: [{ path: 'x.txt', sha256: sha256Hex('org_456 only') }] } });
    await nothingNew(before);
    // Sending the content gives org_other its own copy.
    await accepted([{ path: 'x.txt', content: 'org_456 only' }], 'org_other');
    expect(await objectsOf('org_other')).toHaveLength(1);
  });

  it('refuses content that does not match its sha256, and an entry with neither', async () => {
    const before = await snapshot();
    const wrong = await deploy([{ path: 'a.txt', content: 'actual', sha256: sha256Hex('claimed') }]);
    expect(wrong.json()).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'files/0/sha256', message: expect.stringContaining(sha256Hex('actual')) }] });
    const neither = await deploy([{ path: 'a.txt' }]);
    expect(neither.json()).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'files/0', message: 'needs content or sha256' }] });
    const upper = await deploy([{ path: 'a.txt', sha256: sha256Hex('x').toUpperCase() }]);
    expect(upper.statusCode).toBe(400);
    await nothingNew(before);
  });

  it('counts files given by sha256 toward the size limit', async () => {
    const big = (letter: string) => letter.repeat(5 * MiB);
    await accepted([{ path: 'a.bin', content: big('a') }], 'org_456', 'one');
    await accepted([{ path: 'b.bin', content: big('b') }], 'org_456', 'two');
    const before = await snapshot();
    const response = await deploy([
      { path: 'a.bin', sha256: sha256Hex(big('a')) },
      { path: 'b.bin', sha256: sha256Hex(big('b')) },
      { path: 'c.bin', content: 'c'.repeat(3 * MiB) },
    ]);
    expect(response.statusCode).toBe(400);
    expect(response.json()).toMatchObject({ error: 'VALIDATION_ERROR', details: [{ field: 'files', message: `files total ${13 * MiB} bytes; the limit is ${12 * MiB}` }] });
    await nothingNew(before);
  });

  it('shows a deployment recorded before content-addressed source as having stored its whole source', async () => {
    const id = await accepted(entries(FILES));
    const record = await h.adapters.store.get({ orgId: 'org_456', deploymentId: id });
    if (record === null) throw new Error('missing');
    const { storedFiles: _files, storedBytes: _bytes, ...legacy } = record.source;
    await h.adapters.store.replace({ ...record, source: legacy as typeof record.source });
    expect(await sourceOf(id)).toMatchObject({ fileCount: 3, storedFiles: 3, storedBytes: bytesOf(FILES) });
  });

  it('refreshes the last use of referenced objects; cleanup sweeps only old unreferenced ones of the org', async () => {
    const aged = new Date(Date.now() - 2 * 24 * 3600_000);
    const gone = await accepted([{ path: 'shared.txt', content: 'shared' }, { path: 'only-gone.txt', content: 'only gone' }], 'org_456', 'gone');
    const orphan = await accepted([{ path: 'fresh-orphan.txt', content: 'fresh orphan' }], 'org_456', 'orphan');
    await accepted([{ path: 'only-gone.txt', content: 'only gone' }], 'org_other', 'theirs');
    for (const [org, content] of [['org_456', 'shared'], ['org_456', 'only gone'], ['org_other', 'only gone']] as const) await utimes(objectPath(org, content), aged, aged);

    // A new deployment referencing an old object marks it used now.
    await accepted([{ path: 'shared.txt', sha256: sha256Hex('shared') }], 'org_456', 'keeper');
    expect((await stat(objectPath('org_456', 'shared'))).mtimeMs).toBeGreaterThan(Date.now() - 3600_000);
    await utimes(objectPath('org_456', 'shared'), aged, aged);

    // `gone` and the orphan finish and are removed by cleanup; `keeper` stays queued and keeps `shared.txt` referenced.
    for (const id of [gone, orphan]) expect((await h.app.inject({ method: 'POST', url: `/deploy/${id}/cancel`, headers: auth('org_456') })).statusCode).toBe(202);

    const dry = await h.app.inject({ method: 'POST', url: '/status/cleanup', headers: auth('org_456'), payload: { olderThanDays: 0, dryRun: true } });
    expect(dry.json()).toMatchObject({ removed: { objects: 0, objectBytes: 0 } });
    expect(await objectsOf('org_456')).toHaveLength(3);

    const response = await h.app.inject({ method: 'POST', url: '/status/cleanup', headers: auth('org_456'), payload: { olderThanDays: 0 } });
    expect(response.json()).toMatchObject({ removed: { deployments: 2, objects: 1, objectBytes: Buffer.byteLength('only gone') } });
    expect(await objectsOf('org_456')).toEqual(
      [sha256Hex('shared'), sha256Hex('fresh orphan')].map((digest) => `objects/${orgStorageKey('org_456')}/${digest}`).sort(),
    );
    // Another org's copy of the same content, just as old, is not this org's to sweep.
    expect(await objectsOf('org_other')).toEqual([`objects/${orgStorageKey('org_other')}/${sha256Hex('only gone')}`]);
  });
});
