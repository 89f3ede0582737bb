import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import Type from 'typebox';
import { describe, expect, it } from 'vitest';
import {
  appName,
  checkDeployRequest,
  checkSourcePath,
  chooseProviders,
  ConfigError,
  DEPLOYMENT_ID_PATTERN,
  decodeSourceManifest,
  encodeSourceManifest,
  generateDockerfile,
  isAllowedContainerSize,
  memoized,
  derivedEventId,
  newDeploymentId,
  newPrefixedId,
  orgStorageKey,
  randomBase32,
  parseEnv,
  planBuild,
  projectKey,
  SecretMasker,
  secureRandomBytes,
  sha256Hex,
  sourceDigest,
} from '../src/index.ts';

describe('config parsing', () => {
  const schema = Type.Object({
    PORT: Type.Integer({ minimum: 1, maximum: 65535, default: 3010 }),
    MODE: Type.Union([Type.Literal('local'), Type.Literal('azure')], { default: 'local' }),
    NAME: Type.String(),
  });

  it('converts, applies defaults and treats empty strings as unset', () => {
    expect(parseEnv(schema, { PORT: '8080', NAME: 'x', MODE: '' })).toEqual({ PORT: 8080, MODE: 'local', NAME: 'x' });
  });

  it('names every bad variable', () => {
    try {
      parseEnv(schema, { PORT: 'eighty', MODE: 'cloud' });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const problems = (error as ConfigError).problems;
      expect(problems.map((p) => p.variable).sort()).toEqual(['MODE', 'NAME', 'PORT']);
      expect((error as Error).message).toContain('MODE: must be one of local, azure (got "cloud")');
      expect((error as Error).message).toContain('NAME: is required');
    }
  });
});

describe('names', () => {
  it('deployment ids are dep_ + 26 lowercase base32 characters and differ', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newDeploymentId()));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(id).toMatch(new RegExp(DEPLOYMENT_ID_PATTERN));
  });

  it('deployment ids start with a time prefix that sorts as text in creation order, then 100 random bits', () => {
    const at = Date.parse('2026-12-06T12:00:00Z');
    // Ids a tick (1/64 s) or more apart sort in creation order, across every character of the prefix.
    const times = [at, at + 16, at + 1000, at + 60_000, at + 3_600_000, at + 86_400_000, at + 30 * 86_400_000];
    const ids = times.map((time) => newDeploymentId(time));
    expect([...ids].sort()).toEqual(ids);
    for (const id of ids) expect(id).toMatch(new RegExp(DEPLOYMENT_ID_PATTERN));
    // Same instant: same prefix, and the remaining 20 characters are random (no two alike in 1,000;
    // every one of the 32 characters turns up in every random position).
    const same = Array.from({ length: 1000 }, () => newDeploymentId(at));
    expect(new Set(same.map((id) => id.slice(0, 10))).size).toBe(1);
    expect(new Set(same.map((id) => id.slice(10))).size).toBe(1000);
    for (let position = 10; position < 30; position += 1) expect(new Set(same.map((id) => id[position])).size).toBe(32);
  });

  it('prefixed ids (events, webhooks) are the prefix + 26 random base32 characters, each id its own string', () => {
    const ids = Array.from({ length: 1000 }, () => newPrefixedId('evt_'));
    expect(new Set(ids).size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^evt_[a-z2-7]{26}$/);
    // Every character turns up in every position: 5 random bits each, none stuck.
    for (let position = 4; position < 30; position += 1) expect(new Set(ids.map((id) => id[position])).size).toBe(32);
    // Ids are built in one scratch buffer: an earlier id is not changed by a later one.
    const first = randomBase32('wh_', 26);
    const copy = `${first}`;
    randomBase32('longer_prefix_', 40);
    expect(first).toBe(copy);
    expect(() => randomBase32('évt_', 26)).toThrow(/printable ASCII/);
    expect(() => randomBase32('x', 200)).toThrow(/at most 128/);
  });

  it('derived event ids are the low 5 bits of the seed\'s SHA-256 bytes in base32, as before the scratch buffer', () => {
    const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
    const expected = (seed: string) => `evt_${[...createHash('sha256').update(seed).digest().subarray(0, 26)].map((byte) => alphabet[byte & 31]).join('')}`;
    for (const seed of ['app.deleted:org_1:site', '', 'ü']) expect(derivedEventId(seed)).toBe(expected(seed));
    expect(derivedEventId('a')).toBe(derivedEventId('a'));
  });

  it('pooled random bytes are never handed out twice, across pool refills, and look uniform', () => {
    // 20 + 9 + 26 bytes per POST (id, etag, event id): many refills of the 4 KB pool.
    const seen = new Set<string>();
    const counts = new Array<number>(256).fill(0);
    for (let i = 0; i < 3000; i += 1) {
      for (const size of [20, 9, 26]) {
        const bytes = secureRandomBytes(size);
        expect(bytes.length).toBe(size);
        seen.add(bytes.toString('hex'));
        for (const byte of bytes) counts[byte] = (counts[byte] ?? 0) + 1;
      }
    }
    expect(seen.size).toBe(9000);
    // 165,000 bytes over 256 values: ~645 each; a stuck or repeating pool would be far off.
    expect(Math.min(...counts)).toBeGreaterThan(500);
    expect(Math.max(...counts)).toBeLessThan(800);
    // Larger than the pool: straight from the CSPRNG.
    expect(secureRandomBytes(10_000).length).toBe(10_000);
  });

  it('memoized hashes answer as the hash does, also past their cap', () => {
    let calls = 0;
    const key = memoized((value) => {
      calls += 1;
      return sha256Hex(value).slice(0, 8);
    }, 2);
    expect([key('a'), key('a'), key('b')]).toEqual([sha256Hex('a').slice(0, 8), sha256Hex('a').slice(0, 8), sha256Hex('b').slice(0, 8)]);
    expect(calls).toBe(2);
    expect(key('c')).toBe(sha256Hex('c').slice(0, 8)); // over the cap: forgets, computes
    expect(key('a')).toBe(sha256Hex('a').slice(0, 8));
    expect(calls).toBe(4);
    expect(projectKey('o', 'p')).toBe(sha256Hex('o\u0000p').slice(0, 32));
    expect(orgStorageKey('o')).toBe(sha256Hex('o').slice(0, 32));
  });

  it('app names fit Container Apps rules and differ between orgs', () => {
    const a = appName('org_a', 'My Shop!! Frontend 2026 edition', 'production');
    const b = appName('org_b', 'My Shop!! Frontend 2026 edition', 'production');
    for (const name of [a, b, appName('o', '123', 'development'), appName('o', '---', 'staging')]) {
      expect(name.length).toBeLessThanOrEqual(32);
      expect(name).toMatch(/^[a-z][a-z0-9-]*[a-z0-9]$/);
      expect(name).not.toContain('--');
    }
    expect(a).not.toBe(b);
    expect(a.endsWith('-production')).toBe(true);
    expect(projectKey('o', 'p')).toBe(projectKey('o', 'p'));
  });
});

describe('source paths', () => {
  it.each(['index.html', 'src/app.ts', 'a/b/c.d.e', '.env.example', 'pages/[id].tsx', 'é/ü.txt'])('accepts %s', (path) => {
    expect(checkSourcePath(path)).toBeNull();
  });

  it.each([
    ['', 'empty'],
    ['/etc/passwd', 'absolute'],
    ['../x', '".." segment'],
    ['a/../../x', '".." segment'],
    ['a/./b', '"." segment'],
    ['a//b', 'empty segment'],
    ['a/', 'empty segment'],
    ['a\\..\\b', 'backslash'],
    ['C:/windows', 'drive letter'],
    ['a\u0000b', 'control'],
    ['a\nb', 'control'],
    ['a\u202eb', 'control'],
    ['x'.repeat(600), 'longer than'],
    [`${'a/'.repeat(40)}b`, 'deeper'],
  ])('refuses %j (%s)', (path, why) => {
    expect(checkSourcePath(path)).toContain(why);
  });

  it('round-trips a manifest and refuses a tampered one', () => {
    const files = [{ path: 'index.html', sha256: sha256Hex('<h1>hi</h1>'), size: 11 }];
    const manifest = encodeSourceManifest({ files, historyMessages: [{ role: 'user', content: 'make a site' }] });
    const decoded = decodeSourceManifest(manifest);
    expect(decoded).toEqual({ files, historyMessages: [{ role: 'user', content: 'make a site' }] });
    expect(sourceDigest(decoded.files)).toBe(sourceDigest(files));
    const evil = encodeSourceManifest({ files: [{ path: '../../etc/cron.d/x', sha256: sha256Hex(''), size: 0 }], historyMessages: [] });
    expect(() => decodeSourceManifest(evil)).toThrow(/".." segment/);
    const badDigest = encodeSourceManifest({ files: [{ path: 'a', sha256: '../x', size: 0 }], historyMessages: [] });
    expect(() => decodeSourceManifest(badDigest)).toThrow(/digest/);
  });

  it('source manifests are stored as JSON, and manifests stored gzipped before still decode', () => {
    const files = [{ path: 'index.html', sha256: sha256Hex('x'), size: 1 }];
    const manifest = encodeSourceManifest({ files, historyMessages: [] });
    expect(JSON.parse(manifest.toString('utf8'))).toEqual({ version: 2, files, historyMessages: [] });
    const older = gzipSync(JSON.stringify({ version: 2, files, historyMessages: [{ role: 'user', content: 'hi' }] }));
    expect(decodeSourceManifest(older)).toEqual({ files, historyMessages: [{ role: 'user', content: 'hi' }] });
    expect(decodeSourceManifest(manifest)).toEqual({ files, historyMessages: [] });
  });

  it('gives identical trees one source digest, whatever the order, and any change another', () => {
    const a = { path: 'a.txt', sha256: sha256Hex('a'), size: 1 };
    const b = { path: 'b/c.txt', sha256: sha256Hex('b'), size: 1 };
    expect(sourceDigest([a, b])).toBe(sourceDigest([b, a]));
    expect(sourceDigest([a, b])).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(sourceDigest([a, { ...b, sha256: sha256Hex('c') }])).not.toBe(sourceDigest([a, b]));
    expect(sourceDigest([a, { ...b, path: 'b/d.txt' }])).not.toBe(sourceDigest([a, b]));
    expect(sourceDigest([a])).not.toBe(sourceDigest([a, b]));
  });
});

describe('deploy request checks', () => {
  const base = { projectId: 'p', userId: 'u', orgId: 'o', files: [{ path: 'index.html', content: 'hi' }] };

  it('resolves v1 aliases and defaults', () => {
    const result = checkDeployRequest({ projectId: 'p', userId: 'u', orgId: 'o', initFiles: [{ path: 'index.html', content: 'aGk=', encoding: 'base64' }] });
    expect('request' in result && result.request).toMatchObject({ orgId: 'o', environment: 'development', customDomain: null });
    expect('request' in result && result.request.files[0]?.data?.toString()).toBe('hi');
    expect('request' in result && result.request.files[0]?.sha256).toBe(sha256Hex('hi'));
  });

  it('takes a file by sha256 alone, checks a sha256 given with content, and needs one of them', () => {
    const digest = sha256Hex('hi');
    const referenced = checkDeployRequest({ ...base, files: [{ path: 'index.html', sha256: digest }] });
    expect('request' in referenced && referenced.request.files).toEqual([{ path: 'index.html', sha256: digest, data: null }]);
    const both = checkDeployRequest({ ...base, files: [{ path: 'a', content: 'hi', sha256: digest }, { path: 'b', content: 'ho', sha256: digest }, { path: 'c' }] });
    expect('errors' in both && both.errors).toEqual([
      { field: 'files/1/sha256', message: `does not match the content, whose sha256 is ${sha256Hex('ho')}` },
      { field: 'files/2', message: 'needs content or sha256' },
    ]);
  });

  it('names the field of each problem', () => {
    const result = checkDeployRequest({
      ...base,
      organizationId: 'other',
      files: [
        { path: 'a', content: 'x' },
        { path: 'a', content: '!!!', encoding: 'base64' },
      ],
      containerSize: { cpu: '1', memory: '3Gi' },
      envVariables: { PORT: '1' },
    });
    expect('errors' in result && result.errors.map((e) => e.field)).toEqual([
      'orgId',
      'files/1/path',
      'files/1/content',
      'containerSize',
      'envVariables/PORT',
    ]);
  });

  it('needs files and an org', () => {
    const result = checkDeployRequest({ projectId: 'p', userId: 'u', files: [] });
    expect('errors' in result && result.errors.map((e) => e.field)).toEqual(['organizationId', 'files']);
  });

  it('knows the Container Apps CPU/memory pairs', () => {
    expect(isAllowedContainerSize(0.5, '1Gi')).toBe(true);
    expect(isAllowedContainerSize(2, '4Gi')).toBe(true);
    expect(isAllowedContainerSize(4, '8Gi')).toBe(true);
    expect(isAllowedContainerSize(1, '1Gi')).toBe(false);
    expect(isAllowedContainerSize(0.3, '0.6Gi')).toBe(false);
    expect(isAllowedContainerSize(8, '16Gi')).toBe(false);
  });
});

describe('build plans', () => {
  const files = (entries: Record<string, string>) => new Map(Object.entries(entries).map(([k, v]) => [k, Buffer.from(v)]));
  const spec = { buildCommand: null, startCommand: null, port: null };

  it('detects a static site, a Node app with a lockfile, and a built static site', () => {
    expect(planBuild(files({ 'index.html': '' }), spec)).toMatchObject({ kind: 'static', install: null, start: null, port: 8080 });
    expect(planBuild(files({ 'package.json': '{"scripts":{"start":"node s.js"}}', 'package-lock.json': '{}' }), spec)).toMatchObject({
      kind: 'node',
      install: 'npm ci',
      start: 'npm start',
      build: null,
    });
    expect(planBuild(files({ 'package.json': '{"scripts":{"build":"vite build"}}' }), spec)).toMatchObject({
      kind: 'static',
      install: 'npm install --no-audit --no-fund',
      build: 'npm run build',
    });
  });

  it('refuses what it cannot run, with a reason', () => {
    expect(() => planBuild(files({ 'README.md': '' }), spec)).toThrow(/Cannot tell how to run/);
    expect(() => planBuild(files({ 'package.json': '{nope' }), spec)).toThrow(/not valid JSON/);
  });

  it('generates a Dockerfile that runs the start command on the port', () => {
    const dockerfile = generateDockerfile(planBuild(files({ 'package.json': '{"scripts":{"start":"node s.js"}}' }), { ...spec, port: 3000 }));
    expect(dockerfile).toContain('RUN npm install --no-audit --no-fund');
    expect(dockerfile).toContain('ENV PORT=3000');
    expect(dockerfile).toContain('CMD ["sh", "-c", "npm start"]');
    expect(generateDockerfile(planBuild(files({ 'index.html': '' }), spec))).toContain('brotli_static on;');
  });
});

describe('secret masking', () => {
  it('masks values and their escaped and base64 forms, not short ones', () => {
    const masker = new SecretMasker(['s3cr3t-value', 'ab', 'quote"d-secret']);
    expect(masker.mask('token=s3cr3t-value; again s3cr3t-value')).toBe('token=***; again ***');
    expect(masker.mask(Buffer.from('s3cr3t-value').toString('base64'))).toBe('***');
    expect(masker.mask('{"v":"quote\\"d-secret"}')).toBe('{"v":"***"}');
    expect(masker.mask('ab stays')).toBe('ab stays');
  });
});

describe('provider selection', () => {
  it('follows DEPLOY_MODE and takes per-port overrides', () => {
    expect(chooseProviders({ DEPLOY_MODE: 'local' })).toEqual({ data: 'local', secrets: 'local', builder: 'local', runtime: 'local' });
    expect(chooseProviders({ DEPLOY_MODE: 'azure' })).toEqual({ data: 'azure', secrets: 'azure', builder: 'azure', runtime: 'azure' });
    // docker-compose: Azure data on the emulators, local secrets, builds and apps
    expect(chooseProviders({ DEPLOY_MODE: 'azure', SECRETS_PROVIDER: 'local', BUILDER_PROVIDER: 'local', RUNTIME_PROVIDER: 'local' })).toEqual({
      data: 'azure',
      secrets: 'local',
      builder: 'local',
      runtime: 'local',
    });
  });

  it.each([
    [{ DEPLOY_MODE: 'local', BUILDER_PROVIDER: 'azure', RUNTIME_PROVIDER: 'azure', SECRETS_PROVIDER: 'azure' }, ['SECRETS_PROVIDER', 'BUILDER_PROVIDER']],
    [{ DEPLOY_MODE: 'azure', RUNTIME_PROVIDER: 'local' }, ['RUNTIME_PROVIDER']],
    [{ DEPLOY_MODE: 'azure', BUILDER_PROVIDER: 'local' }, ['RUNTIME_PROVIDER']],
    [{ DEPLOY_MODE: 'azure', SECRETS_PROVIDER: 'local' }, ['SECRETS_PROVIDER']],
  ] as const)('refuses %j, naming %j', (env, variables) => {
    try {
      chooseProviders(env);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).problems.map((p) => p.variable)).toEqual(variables);
    }
  });
});
