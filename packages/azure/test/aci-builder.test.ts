import { inspect } from 'node:util';
import type { BuildJob } from '@zepid/core';
import { alwaysHeld, appName, newDeploymentId, sandboxName } from '@zepid/core';
import { rejection, trustTestCertificate } from '@zepid/testkit';
import { startArmSimulator } from '@zepid/testkit/fakes/arm/index.ts';
import type { ArmSimulator } from '@zepid/testkit/fakes/arm/index.ts';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ACR_REFRESH_TOKEN_USERNAME } from '../src/acr/token-exchange.ts';
import { AciKanikoBuilder, imageRepository } from '../src/aci/builder.ts';
import type { AciKanikoBuilderOptions } from '../src/aci/builder.ts';
import { storageKeyFromArm } from '../src/aci/storage-key.ts';
import { BuildLogFollower, DIGEST_MARKER, LOG_WINDOW_BYTES } from '../src/aci/build-log.ts';

const KANIKO_IMAGE = 'ghcr.io/osscontainertools/kaniko:v1.28.3-debug';

interface LoggedLine {
  message: string;
  level: 'info' | 'warn' | 'error';
}

let sim: ArmSimulator;

beforeAll(() => {
  trustTestCertificate();
});

beforeEach(async () => {
  sim = await startArmSimulator({ lroPolls: 2 });
});

afterEach(async () => {
  // Every request the adapter made was one ARM accepts (scenario answers aside).
  expect(sim.invalidRequests()).toEqual([]);
  await sim.close();
});

function builder(overrides: Partial<AciKanikoBuilderOptions> = {}): AciKanikoBuilder {
  return new AciKanikoBuilder({
    subscriptionId: sim.subscriptionId,
    resourceGroup: sim.resourceGroup,
    location: sim.location,
    credential: sim.credential,
    armEndpoint: sim.url,
    registry: sim.registry,
    kanikoImage: KANIKO_IMAGE,
    cpu: 2,
    memoryInGB: 4,
    storageAccountName: sim.storageAccountName,
    storageAccessKey: storageKeyFromArm({
      credential: sim.credential,
      subscriptionId: sim.subscriptionId,
      resourceGroup: sim.resourceGroup,
      accountName: sim.storageAccountName,
      armEndpoint: sim.url,
    }),
    pollIntervalMs: 5,
    maxPollIntervalMs: 20,
    operationPollIntervalMs: 5,
    buildTimeoutMs: 30_000,
    maxRetries: 0,
    ...overrides,
  });
}

function buildJob(options: { onLine?: (line: LoggedLine, lines: LoggedLine[]) => void; contextUri?: string } = {}): {
  job: BuildJob;
  lines: LoggedLine[];
  controller: AbortController;
} {
  const deploymentId = newDeploymentId();
  const lines: LoggedLine[] = [];
  const controller = new AbortController();
  const job: BuildJob = {
    deploymentId,
    orgId: 'org_acme',
    projectId: 'shop-front',
    appName: appName('org_acme', 'shop-front', 'production'),
    plan: { kind: 'node', install: 'npm ci', build: 'npm run build', start: 'npm start', port: 3000, framework: 'node', packageManager: null, outputDir: null, outputHint: null, image: 'start' },
    contextUri: options.contextUri ?? `https://${sim.storageAccountName}.blob.core.windows.net/contexts/${deploymentId}.tar.gz`,
    envVariableNames: [],
    signal: controller.signal,
    fence: alwaysHeld,
    log: (message, level = 'info') => {
      const line = { message, level };
      lines.push(line);
      options.onLine?.(line, lines);
    },
  };
  return { job, lines, controller };
}

/** Every secret the run handed out: the storage key, registry tokens, Entra tokens. */
function secrets(): string[] {
  return [sim.storageKey, ...sim.acr.issuedTokens(), ...sim.credential.issuedTokens()];
}

function expectNoSecret(text: string): void {
  for (const secret of secrets()) expect(text).not.toContain(secret);
}

describe('AciKanikoBuilder', () => {
  it('creates the kaniko group, copies its log as it grows, reads the digest and deletes the group', async () => {
    sim.aci.scenario = { linesPerPoll: 3, partialLines: true, startPolls: 2 };
    const adapter = builder();
    const { job, lines } = buildJob();
    const name = sandboxName(job.deploymentId);
    const repository = imageRepository(job.appName);

    const sandbox = await adapter.createSandbox(job);
    expect(sandbox.containerGroup).toBe(name);
    expect(sandbox.resourceId).toMatch(new RegExp(`/containerGroups/${name}$`));

    const sent = sim.aci.sentBody(name);
    expect(sent).toBeDefined();
    expect(sent?.location).toBe(sim.location);
    expect(sent?.tags).toEqual({ deploymentId: job.deploymentId, projectId: 'shop-front', orgId: 'org_acme' });
    expect(sent?.properties.restartPolicy).toBe('Never');
    expect(sent?.properties.osType).toBe('Linux');
    const container = sent?.properties.containers[0];
    expect(container?.properties.image).toBe(KANIKO_IMAGE);
    expect(container?.properties.resources).toEqual({ requests: { cpu: 2, memoryInGB: 4 } });
    const command = container?.properties.command ?? [];
    expect(command.slice(0, 2)).toEqual(['/busybox/sh', '-c']);
    expect(command).toEqual(
      expect.arrayContaining([
        `--context=${job.contextUri}`,
        `--destination=${sim.registry}/${repository}:${job.deploymentId}`,
        '--cache=true',
        `--cache-repo=${sim.registry}/cache`,
        '--digest-file=/kaniko/digest',
      ]),
    );
    // The storage key is a secure value and the push credential a secret volume, nowhere else.
    expect(container?.properties.environmentVariables).toEqual([{ name: 'AZURE_STORAGE_ACCESS_KEY', secureValue: sim.storageKey }]);
    expect(container?.properties.volumeMounts).toEqual([{ name: 'docker-config', mountPath: '/kaniko/.docker', readOnly: true }]);
    const volume = sent?.properties.volumes?.find((candidate) => candidate.name === 'docker-config');
    const config = JSON.parse(Buffer.from(volume?.secret?.['config.json'] ?? '', 'base64').toString('utf8')) as { auths: Record<string, { auth: string }> };
    const [user, password] = Buffer.from(config.auths[sim.registry]?.auth ?? '', 'base64').toString('utf8').split(':');
    expect(user).toBe(ACR_REFRESH_TOKEN_USERNAME);
    expect(sim.acr.refreshTokens.has(password ?? '')).toBe(true);
    expect(JSON.stringify(command)).not.toContain(sim.storageKey);

    const before = lines.length;
    const built = await adapter.build(job);
    expect(built.image).toBe(`${sim.registry}/${repository}:${job.deploymentId}`);
    expect(built.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(built.digest).toBe(sim.acr.digestOf(repository, job.deploymentId));

    // Each line of the container's output reaches the deployment log once, in order, never a half
    // line; the digest marker line is consumed and the adapter's own summary ends the step.
    const output = sim.aci.output(name);
    expect(output.at(-1)).toBe(`ZEPID_IMAGE_DIGEST=${built.digest ?? ''}`);
    const buildLines = lines.slice(before).map((line) => line.message);
    expect(buildLines.slice(0, -1)).toEqual(output.slice(0, -1));
    expect(buildLines.at(-1)).toBe(`Pushed ${built.image} (${built.digest ?? ''})`);
    // The log grew between polls and was read several times while growing.
    const reads = sim.aci.logReads(name);
    expect(new Set(reads).size).toBeGreaterThanOrEqual(3);
    expect(reads).toEqual([...reads].sort((a, b) => a - b));

    await adapter.deleteSandbox(job.deploymentId);
    expect(sim.aci.names()).not.toContain(name);
    expect(sim.aci.deleted).toContain(name);
    await adapter.deleteSandbox(job.deploymentId);

    // Every token the adapter asked for was for the ARM audience (also what the ACR exchange uses).
    expect(sim.credential.requestedScopes.every((scopes) => scopes.length === 1 && scopes[0] === 'https://management.azure.com/.default')).toBe(true);
    expectNoSecret(JSON.stringify(sim.requests));
    expectNoSecret(JSON.stringify(lines));
  });

  it('follows a log longer than the 4 MB ACI returns: every line once, in order, and the digest line at the end', async () => {
    // 60,000 lines of 100 bytes (6 MB), 12,000 a poll: the window's front moves from the third read on.
    const logLines = Array.from({ length: 60_000 }, (_, index) => `INFO[${String(index).padStart(5, '0')}] ${'x'.repeat(87)}`);
    sim.aci.scenario = { logLines, linesPerPoll: 12_000 };
    const adapter = builder();
    const { job, lines } = buildJob();
    await adapter.createSandbox(job);
    const before = lines.length;
    const built = await adapter.build(job);
    const output = sim.aci.output(sandboxName(job.deploymentId));
    expect(Math.max(...sim.aci.logReads(sandboxName(job.deploymentId)))).toBeLessThanOrEqual(4 * 1024 * 1024);
    expect(output.join('\n').length).toBeGreaterThan(5 * 1024 * 1024);
    expect(built.digest).toBe(sim.acr.digestOf(imageRepository(job.appName), job.deploymentId));
    const copied = lines.slice(before).map((line) => line.message);
    expect(copied.slice(0, -1)).toEqual(output.slice(0, -1));
    expect(copied.filter((line) => line.includes('earlier lines are missing'))).toEqual([]);
  });

  it('finds the group of an earlier attempt instead of creating a twin', async () => {
    const adapter = builder();
    const { job } = buildJob();
    await adapter.createSandbox(job);
    await adapter.createSandbox(job);
    const puts = sim.requests.filter((request) => request.method === 'PUT' && request.path.endsWith(`/containerGroups/${sandboxName(job.deploymentId)}`));
    expect(puts).toHaveLength(1);
    await expect(adapter.build(job)).resolves.toMatchObject({ digest: expect.stringMatching(/^sha256:/) as unknown });
  });

  it('builds afresh when a retry finds the group of a failed attempt', async () => {
    sim.aci.scenario = { exitCode: 1 };
    const adapter = builder();
    const { job } = buildJob();
    await adapter.createSandbox(job);
    expect((await rejection(adapter.build(job))).code).toBe('BUILD_FAILED');
    sim.aci.scenario = {};
    await adapter.createSandbox(job);
    expect(sim.aci.deleted).toEqual([sandboxName(job.deploymentId)]);
    await expect(adapter.build(job)).resolves.toMatchObject({ digest: expect.stringMatching(/^sha256:/) as unknown });
  });

  it('fails a build that exits non-zero with BUILD_FAILED, the exit code and the end of the log', async () => {
    sim.aci.scenario = {
      exitCode: 1,
      logLines: ['INFO[0001] RUN npm run build', '> shop-front@1.0.0 build', 'sh: vite: not found', 'npm ERR! code 127', 'error building image: exit status 127'],
    };
    const adapter = builder();
    const { job } = buildJob();
    await adapter.createSandbox(job);
    const error = await rejection(adapter.build(job));
    expect(error.code).toBe('BUILD_FAILED');
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('exited with code 1');
    expect(error.message).toContain('sh: vite: not found');
    expect(error.message).toContain('error building image: exit status 127');
    expect(error.details).toMatchObject({ exitCode: 1 });
    expectNoSecret(`${error.message} ${inspect(error, { depth: 10 })} ${JSON.stringify(error)}`);
  });

  it('reports an exhausted container quota as CLOUD_QUOTA_EXCEEDED, retryable', async () => {
    sim.aci.scenario = {
      createError: {
        status: 409,
        code: 'ContainerGroupQuotaReached',
        message: "Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota 'StandardCores' exceeded in region 'westeurope'. Limit: '10', Usage: '10', Requested: '2'.",
      },
    };
    const { job } = buildJob();
    const error = await rejection(builder().createSandbox(job));
    expect(error.code).toBe('CLOUD_QUOTA_EXCEEDED');
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('StandardCores');
    expect(sim.aci.names()).toEqual([]);
    expectNoSecret(`${error.message} ${inspect(error, { depth: 10 })}`);
  });

  it('reports a kaniko image ARM cannot access as IMAGE_PULL_FAILED', async () => {
    sim.aci.scenario = { kanikoImagePull: 'inaccessible' };
    const { job } = buildJob();
    const error = await rejection(builder({ kanikoImage: 'ghcr.io/osscontainertools/kaniko:no-such-tag' }).createSandbox(job));
    expect(error.code).toBe('IMAGE_PULL_FAILED');
    expect(error.retryable).toBe(false);
    expect(error.message).toContain('ghcr.io/osscontainertools/kaniko:no-such-tag');
  });

  it('gives up on a kaniko image that keeps failing to pull, and deletes the group', async () => {
    sim.aci.scenario = { kanikoImagePull: 'backoff' };
    const adapter = builder({ imagePullAttempts: 3 });
    const { job } = buildJob();
    await adapter.createSandbox(job);
    const error = await rejection(adapter.build(job));
    expect(error.code).toBe('IMAGE_PULL_FAILED');
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('Failed to pull image');
    expect(sim.aci.deleted).toContain(sandboxName(job.deploymentId));
  });

  it('deletes the group and throws CANCELLED when the deployment is cancelled mid-build', async () => {
    sim.aci.scenario = { runForever: true, linesPerPoll: 1 };
    const adapter = builder();
    const { job, controller } = buildJob({
      onLine: (_line, lines) => {
        if (lines.filter((line) => line.message.startsWith('INFO[')).length === 3) controller.abort();
      },
    });
    await adapter.createSandbox(job);
    const error = await rejection(adapter.build(job));
    expect(error.code).toBe('CANCELLED');
    expect(sim.aci.names()).toEqual([]);
    expect(sim.aci.deleted).toEqual([sandboxName(job.deploymentId)]);
  });

  it('a run that lost its lease sends no further ARM request and leaves the group to the new owner', async () => {
    sim.aci.scenario = { runForever: true, linesPerPoll: 1 };
    const adapter = builder();
    let held = true;
    const skipped: string[] = [];
    let mark = -1;
    const { job, controller } = buildJob({
      onLine: (_line, lines) => {
        if (lines.filter((line) => line.message.startsWith('INFO[')).length === 3 && held) {
          // Another delivery took the deployment over; the workflow aborts the run with LeaseLost.
          held = false;
          mark = sim.requests.length;
          controller.abort(Object.assign(new Error('another delivery took the deployment over'), { name: 'LeaseLost' }));
        }
      },
    });
    job.fence = (action) => {
      if (!held) skipped.push(action);
      return Promise.resolve(held);
    };
    await adapter.createSandbox(job);
    await rejection(adapter.build(job));
    expect(sim.requests.slice(mark)).toEqual([]);
    expect(sim.aci.names()).toEqual([sandboxName(job.deploymentId)]);
    expect(sim.aci.deleted).toEqual([]);
    expect(skipped).toContain(`deleting build container group ${sandboxName(job.deploymentId)}`);
  });

  it('creates the group again when it is deleted under the running build (a late DELETE of an earlier owner), more than once', async () => {
    sim.aci.scenario = { logLines: Array.from({ length: 12 }, (_, i) => `INFO[00${String(i).padStart(2, '0')}] step ${i}`), linesPerPoll: 1 };
    const adapter = builder();
    // The earlier owner of the deployment, fenced off but too late for one request each time.
    const earlierOwner = builder();
    const deletes: Promise<void>[] = [];
    let steps = 0;
    const { job, lines } = buildJob({
      onLine: (line) => {
        // Twice: after the 3rd and the 7th build line seen (a recreated group prints its log again).
        if (line.message.startsWith('INFO[') && [3, 7].includes(++steps)) deletes.push(earlierOwner.deleteSandbox(job.deploymentId));
      },
    });
    await adapter.createSandbox(job);
    const image = await adapter.build(job);
    await Promise.all(deletes);
    expect(image.digest).toMatch(/^sha256:/);
    const name = sandboxName(job.deploymentId);
    expect(sim.aci.deleted.filter((deleted) => deleted === name)).toHaveLength(2);
    expect(lines.filter((line) => line.message.includes('was deleted under the running build'))).toHaveLength(2);
  });

  it('throws TIMEOUT for a deployment timeout and BUILD_TIMEOUT for its own limit, deleting the group both times', async () => {
    sim.aci.scenario = { runForever: true };
    const adapter = builder();
    const first = buildJob({
      onLine: (_line, lines) => {
        if (lines.length === 4) first.controller.abort(new DOMException('deployment timeout', 'TimeoutError'));
      },
    });
    await adapter.createSandbox(first.job);
    expect((await rejection(adapter.build(first.job))).code).toBe('TIMEOUT');

    const limited = builder({ buildTimeoutMs: 150 });
    const second = buildJob();
    await limited.createSandbox(second.job);
    const error = await rejection(limited.build(second.job));
    expect(error.code).toBe('BUILD_TIMEOUT');
    expect(sim.aci.deleted).toEqual([sandboxName(first.job.deploymentId), sandboxName(second.job.deploymentId)]);
  });

  it('ends with TIMEOUT when ARM never finishes creating the group, and still deletes it', async () => {
    // The create operation stays InProgress for good: only the deployment's deadline ends the wait.
    sim.aci.scenario = { provisioningPolls: 1_000_000 };
    const adapter = builder();
    const stuck = buildJob();
    setTimeout(() => stuck.controller.abort(new DOMException('deployment timeout', 'TimeoutError')), 300);
    const error = await rejection(adapter.createSandbox(stuck.job));
    expect(error.code).toBe('TIMEOUT');
    await adapter.deleteSandbox(stuck.job.deploymentId);
    expect(sim.aci.names()).not.toContain(sandboxName(stuck.job.deploymentId));
  });

  it('marks throttling and server errors retryable', async () => {
    sim.injectFault({ method: 'PUT', path: /\/containerGroups\//, status: 503, code: 'ServiceUnavailable', message: 'The service is temporarily unavailable' });
    const { job } = buildJob();
    const error = await rejection(builder().createSandbox(job));
    expect(error.retryable).toBe(true);
    expect(error.code).toBe('DEPENDENCY_UNAVAILABLE');
  });

  it('keeps polling through a transient failure while the build runs', async () => {
    const adapter = builder();
    const { job } = buildJob();
    await adapter.createSandbox(job);
    sim.injectFault({ method: 'GET', path: /\/containerGroups\/[^/]+$/, status: 429, code: 'TooManyRequests', times: 2 });
    await expect(adapter.build(job)).resolves.toMatchObject({ digest: expect.stringMatching(/^sha256:/) as unknown });
  });

  it('never hands the storage key to a context outside its storage account', async () => {
    const { job } = buildJob({ contextUri: 'https://attacker.blob.core.windows.net/contexts/x.tar.gz' });
    const error = await rejection(builder().createSandbox(job));
    expect(error.code).toBe('SANDBOX_FAILED');
    expect(sim.requests.some((request) => request.method === 'PUT')).toBe(false);
  });

  it('keeps secrets out of the kept request log, the deployment log and every error', async () => {
    sim.aci.scenario = { exitCode: 2 };
    const adapter = builder();
    const { job, lines } = buildJob();
    await adapter.createSandbox(job);
    const failed = await rejection(adapter.build(job));
    expect(failed.code).toBe('BUILD_FAILED');
    sim.aci.scenario = { createError: { status: 400, code: 'InvalidRequestContent', message: 'The request content was invalid.' } };
    const refused = await rejection(adapter.createSandbox(buildJob().job));
    expect(refused.code).toBe('SANDBOX_FAILED');

    expect(secrets().length).toBeGreaterThanOrEqual(4);
    const kept = JSON.stringify(sim.requests);
    expect(kept).toContain('[redacted]');
    expectNoSecret(kept);
    expectNoSecret(JSON.stringify(lines));
    for (const error of [failed, refused]) expectNoSecret(`${error.message} ${JSON.stringify(error)} ${inspect(error, { depth: 10, showHidden: true })}`);
  });

  /** A build that pushed its image to the registry, as the deletion tests start from. */
  async function pushedImage() {
    const adapter = builder();
    const { job } = buildJob();
    await adapter.createSandbox(job);
    const built = await adapter.build(job);
    return { adapter, job, built, repository: imageRepository(job.appName) };
  }

  it('deletes the image from ACR by manifest digest (compensation, retention, app deletion), and again without harm', async () => {
    const { adapter, job, built, repository } = await pushedImage();
    const digest = built.digest ?? '';
    expect(sim.acr.digestOf(repository, job.deploymentId)).toBe(digest);
    const mark = sim.requests.length;
    await adapter.deleteImage(job.deploymentId, built.image);
    expect(sim.acr.digestOf(repository, job.deploymentId)).toBeUndefined();
    expect(sim.acr.hasDigest(repository, digest)).toBe(false);
    expect(sim.requests.slice(mark).filter((request) => request.method === 'DELETE').map((request) => `${request.path} ${request.status}`)).toEqual([`/v2/${repository}/manifests/${digest} 202`]);
    // Gone already (by tag or by digest): nothing left to do, no error.
    await adapter.deleteImage(job.deploymentId, built.image);
    await adapter.deleteImage(job.deploymentId, `${sim.registry}/${repository}@${digest}`);
    // Another registry's image is never touched.
    const before = sim.requests.length;
    await adapter.deleteImage(job.deploymentId, `other.azurecr.io/${repository}:${job.deploymentId}`);
    expect(sim.requests.length).toBe(before);
  });

  it('keeps a manifest another deployment\'s tag still names, removing only this deployment\'s tag', async () => {
    const { adapter, job, built, repository } = await pushedImage();
    const digest = built.digest ?? '';
    // A later build of the same source came out byte-identical: same digest, its own tag.
    sim.acr.push(repository, 'dep_othertag', digest);
    await adapter.deleteImage(job.deploymentId, built.image);
    expect(sim.acr.tagsOf(repository)).toEqual(['dep_othertag']);
    expect(sim.acr.hasDigest(repository, digest)).toBe(true);
    await adapter.deleteImage('dep_othertag', `${sim.registry}/${repository}:dep_othertag`);
    expect(sim.acr.hasDigest(repository, digest)).toBe(false);
  });

  it('deletes the manifest when the registry will not tell its tags (no metadata/read)', async () => {
    const { adapter, job, built, repository } = await pushedImage();
    sim.acr.metadataRead = false;
    await adapter.deleteImage(job.deploymentId, built.image);
    expect(sim.acr.hasDigest(repository, built.digest ?? '')).toBe(false);
    expect(sim.requests.some((request) => request.path.startsWith(`/acr/v1/${repository}/_manifests/`) && request.status === 401)).toBe(true);
  });

  it('tells whether an earlier build\'s image is still in the registry, by digest, for build reuse', async () => {
    const adapter = builder();
    const { job, controller } = buildJob();
    const repository = imageRepository(job.appName);
    await adapter.createSandbox(job);
    const built = await adapter.build(job);
    const digest = built.digest ?? '';
    expect(digest).toMatch(/^sha256:/);
    expect(adapter.identity).toBe(`aci-kaniko ${KANIKO_IMAGE} ${sim.registry}`);
    expect(await adapter.imageExists(built, controller.signal)).toBe(true);
    // A retention policy or purge deleting the manifest: the image is gone by digest too.
    sim.acr.deleteManifest(repository, digest);
    expect(await adapter.imageExists(built, controller.signal)).toBe(false);
    // An image of another registry is never one this builder can vouch for: no request is made.
    expect(await adapter.imageExists({ image: `other.azurecr.io/${repository}:${job.deploymentId}`, digest }, controller.signal)).toBe(false);
    const lookups = sim.requests.filter((request) => request.path.startsWith('/v2/'));
    expect(lookups.map((request) => `${request.method} ${request.path} ${request.status}`)).toEqual([
      `HEAD /v2/${repository}/manifests/${digest} 200`,
      `HEAD /v2/${repository}/manifests/${digest} 404`,
    ]);
    // A registry that cannot answer is an error (the worker then builds), not a "no".
    sim.injectFault({ method: 'HEAD', path: /^\/v2\//, status: 503, code: 'ServiceUnavailable' });
    expect((await rejection(adapter.imageExists(built, controller.signal))).code).toBe('DEPENDENCY_UNAVAILABLE');
  });

  it('reports healthy when ARM answers', async () => {
    await expect(builder().health()).resolves.toMatchObject({ status: 'healthy' });
  });
});

describe('BuildLogFollower in a moving 4 MB window', () => {
  const windowOf = (lines: string[]) => {
    const text = lines.map((line) => `${line}\n`).join('');
    return text.length > LOG_WINDOW_BYTES ? text.slice(text.length - LOG_WINDOW_BYTES) : text;
  };
  const long = (count: number, from = 0) => Array.from({ length: count }, (_, index) => `line ${String(from + index).padStart(6, '0')} ${'y'.repeat(90)}`);

  it('says when more than the window was written between two reads, and still finds the digest in the last one', () => {
    const copied: { message: string; level: string }[] = [];
    const follower = new BuildLogFollower((message, level = 'info') => copied.push({ message, level }));
    const first = long(10_000);
    follower.accept(windowOf(first), false);
    const all = [...first, ...long(60_000, 10_000), `${DIGEST_MARKER}sha256:${'a'.repeat(64)}`];
    follower.accept(windowOf(all), true);
    expect(follower.digest).toBe(`sha256:${'a'.repeat(64)}`);
    expect(copied.filter((line) => line.level === 'warn' && line.message.includes('earlier lines are missing'))).toHaveLength(1);
    // Nothing copied twice, and the end of the log arrived in order.
    const messages = copied.map((line) => line.message);
    expect(new Set(messages).size).toBe(messages.length);
    expect(messages.at(-1)).toBe(all.at(-2));
  });
});

