import { ContainerInstanceManagementClient } from '@azure/arm-containerinstance';
import type { Container, ContainerGroup } from '@azure/arm-containerinstance';
import type { TokenCredential } from '@azure/identity';
import type { Builder, BuildJob, BuiltImage, DependencyHealth, LogSink } from '@zepid/core';
import { DeployError, ENVIRONMENTS, SecretMasker, probe, sandboxName } from '@zepid/core';
import { AcrTokenExchange, dockerConfigJson } from '../acr/token-exchange.ts';
import type { RegistryCredential } from '../acr/token-exchange.ts';
import { armError, armFailure, isNotFound, isTransient } from './arm-errors.ts';
import { BuildLogFollower, DIGEST_MARKER } from './build-log.ts';
import { LeaseFence } from '../lease-fence.ts';
import { Backoff, abortError, pause } from './polling.ts';
import type { StorageAccessKeyProvider } from './storage-key.ts';

export interface AciKanikoBuilderOptions {
  subscriptionId: string;
  resourceGroup: string;
  /** Region of the build container groups. */
  location: string;
  credential: TokenCredential;
  /** ARM endpoint; tests point it at a simulator. Default https://management.azure.com. */
  armEndpoint?: string | undefined;
  /** Scope of ARM tokens; stays the public ARM audience when the endpoint is a simulator. */
  armScope?: string | undefined;
  /** ACR login server images are pushed to (`myregistry.azurecr.io`). */
  registry: string;
  /** Kaniko executor image; a `-debug` variant, whose busybox shell prints the digest file. */
  kanikoImage: string;
  cpu: number;
  memoryInGB: number;
  /** Account holding the build contexts; the key is only handed to contexts on this account. */
  storageAccountName: string;
  /**
   * Blob endpoint of that account when it is not `https://<account>.blob.<cloud suffix>/` (an
   * emulator's path-style `https://host:port/<account>/`); contexts must lie under it.
   */
  storageBlobEndpoint?: string | undefined;
  storageAccessKey: StorageAccessKeyProvider;
  /** Push credential for kaniko; default: an ACR refresh token from the token exchange (admin user off). */
  registryCredential?: ((signal?: AbortSignal) => Promise<RegistryCredential>) | undefined;
  tenantId?: string | undefined;
  /** Repository of kaniko's layer cache, under the registry. */
  cacheRepository?: string | undefined;
  /** Longest a build may run before it is stopped with BUILD_TIMEOUT. */
  buildTimeoutMs?: number | undefined;
  /** First and longest wait between instance-view polls. */
  pollIntervalMs?: number | undefined;
  maxPollIntervalMs?: number | undefined;
  /** Interval of the SDK's long-running-operation polls (create, delete). */
  operationPollIntervalMs?: number | undefined;
  /** Failed pulls of the kaniko image (ACI retries them) before the build gives up. */
  imagePullAttempts?: number | undefined;
  /** Transient ARM failures in a row the build poll tolerates. */
  transientFailureLimit?: number | undefined;
  /** SDK retries of throttled or failed calls. */
  maxRetries?: number | undefined;
  estimatedDuration?: string | undefined;
}

export const KANIKO_CONTAINER = 'kaniko';
/** Deletions of a followed group (late actions of a fenced-off delivery) a build survives. */
const LATE_DELETES_TOLERATED = 2;
const DIGEST_FILE = '/kaniko/digest';
const DOCKER_CONFIG_VOLUME = 'docker-config';
/**
 * The container runs kaniko under the debug image's busybox shell so that, after a successful push,
 * it can print the digest file into the log with a marker: ACI has no way to read a file of a
 * terminated container, and its log is what the builder can read. kaniko's arguments come as
 * positional parameters ("$@"), so no value is ever interpolated into the script.
 */
const BUILD_SCRIPT = `/kaniko/executor "$@"; code=$?; if [ "$code" -eq 0 ] && [ -s ${DIGEST_FILE} ]; then printf '${DIGEST_MARKER}%s\\n' "$(cat ${DIGEST_FILE})"; fi; exit "$code"`;

/** `<project>-<hash>` of `<project>-<hash>-<environment>`: one repository per project, every environment's images in it. */
export function imageRepository(appName: string): string {
  for (const environment of ENVIRONMENTS) {
    if (appName.endsWith(`-${environment}`)) return appName.slice(0, -(environment.length + 1));
  }
  return appName;
}

/** `<registry>/<repository>` of `<registry>/<repository>:<tag>` (or `@sha256:…`). */
export function splitImage(image: string): { repository: string; tag: string | null } {
  const at = image.indexOf('@');
  if (at >= 0) return { repository: image.slice(0, at), tag: null };
  const slash = image.lastIndexOf('/');
  const colon = image.lastIndexOf(':');
  return colon > slash ? { repository: image.slice(0, colon), tag: image.slice(colon + 1) } : { repository: image, tag: null };
}

/**
 * Builder on Azure Container Instances: the sandbox step creates the container group
 * `build-<deploymentId>` running kaniko (ACI starts a group's containers on creation, so the build
 * begins there); the build step follows it to its end, copying its log, and reads the pushed digest.
 */
export class AciKanikoBuilder implements Builder {
  readonly estimatedDuration: string;
  readonly identity: string;
  private readonly options: AciKanikoBuilderOptions;
  private readonly client: ContainerInstanceManagementClient;
  private readonly acr: AcrTokenExchange;
  private readonly closing = new AbortController();
  private readonly fence = new LeaseFence();

  constructor(options: AciKanikoBuilderOptions) {
    this.options = options;
    this.estimatedDuration = options.estimatedDuration ?? '3-8 minutes';
    // Besides source and plan, a build depends on the kaniko image, and a reused image must be in
    // this registry. Base images (FROM) are not in the key: a reused image keeps the base it was
    // built on, where a rebuild might pull a newer one.
    this.identity = `aci-kaniko ${options.kanikoImage} ${options.registry}`;
    const endpoint = (options.armEndpoint ?? 'https://management.azure.com').replace(/\/+$/, '');
    this.client = new ContainerInstanceManagementClient(options.credential, options.subscriptionId, {
      endpoint,
      $host: endpoint,
      credentialScopes: options.armScope ?? 'https://management.azure.com/.default',
      additionalPolicies: [{ policy: this.fence.policy, position: 'perRetry' }],
      ...(options.maxRetries === undefined ? {} : { retryOptions: { maxRetries: options.maxRetries } }),
    });
    this.acr = new AcrTokenExchange({ loginServer: options.registry, credential: options.credential, tenantId: options.tenantId });
  }

  start(): Promise<void> {
    // Nothing to open: every ARM call is its own request.
    return Promise.resolve();
  }

  /** Stops the polls of running builds without deleting their groups: the next attempt picks them up. */
  close(): Promise<void> {
    this.closing.abort();
    return Promise.resolve();
  }

  health(): Promise<DependencyHealth> {
    return probe(async () => {
      // One page of the resource group's groups: proves the endpoint, the token and the role.
      await this.client.containerGroups.listByResourceGroup(this.options.resourceGroup).byPage().next();
    });
  }

  /** Every ARM request of the job is fenced by its lease (lease-fence.ts). */
  createSandbox(job: BuildJob): Promise<Record<string, string>> {
    return this.fence.run(job.fence, () => this.sandbox(job));
  }

  build(job: BuildJob): Promise<BuiltImage> {
    return this.fence.run(job.fence, () => this.follow(job));
  }

  private async sandbox(job: BuildJob): Promise<Record<string, string>> {
    const name = sandboxName(job.deploymentId);
    const signal = AbortSignal.any([job.signal, this.closing.signal]);
    this.throwIfStopped(job.signal, 'the sandbox step');
    // Also before the registry token exchange, which is not an ARM request.
    if (!(await job.fence(`creating build container group ${name}`))) throw abortError(job.signal, 'the sandbox step');
    const existing = await this.findGroup(name, signal);
    if (existing !== null) {
      const state = kanikoContainer(existing)?.instanceView?.currentState;
      const failedBuild = state?.state === 'Terminated' && state.exitCode !== 0;
      if (existing.provisioningState !== 'Failed' && !failedBuild) {
        // A redelivered job: the build of the earlier attempt is running (or done); follow it.
        job.log(`Build container group ${name} already exists; following it`);
        return this.sandboxRecord(name, existing);
      }
      // A group left by a failed attempt (its cleanup did not get to it): a retry builds afresh.
      job.log(`Build container group ${name} is left from a failed attempt; creating it again`, 'warn');
      await this.deleteGroup(name);
    }

    const contextUri = this.checkContext(job.contextUri);
    const [storageKey, registry] = await Promise.all([this.options.storageAccessKey(signal), this.pushCredential(signal)]);
    const masker = new SecretMasker([storageKey, registry.password]);
    const group = this.containerGroup(job, contextUri, storageKey, registry);
    job.log(`Creating build container group ${name} (kaniko, ${this.options.cpu} vCPU, ${this.options.memoryInGB} GB)`);
    let created: ContainerGroup;
    try {
      const poller = await this.client.containerGroups.beginCreateOrUpdate(this.options.resourceGroup, name, group, {
        updateIntervalInMs: this.options.operationPollIntervalMs ?? 2000,
        abortSignal: signal,
      });
      created = await poller.pollUntilDone({ abortSignal: signal });
    } catch (error) {
      if (job.signal.aborted) {
        await this.discard(name, job);
        throw abortError(job.signal, 'the sandbox step');
      }
      if (this.closing.signal.aborted) throw shuttingDown();
      throw createError(error, this.options.kanikoImage, masker);
    }
    if (created.provisioningState === 'Failed') {
      throw new DeployError('SANDBOX_FAILED', `The build container group ${name} failed to provision${eventSummary(created)}`);
    }
    job.log(`Build container group ${name} is ${created.instanceView?.state ?? created.provisioningState ?? 'created'}`);
    return this.sandboxRecord(name, created);
  }

  private async follow(job: BuildJob): Promise<BuiltImage> {
    const name = sandboxName(job.deploymentId);
    const signal = AbortSignal.any([job.signal, this.closing.signal]);
    const timeoutMs = this.options.buildTimeoutMs ?? 30 * 60_000;
    const backoff = new Backoff(this.options.pollIntervalMs ?? 2000, this.options.maxPollIntervalMs ?? 15_000);
    const follower = new BuildLogFollower(job.log);
    const image = `${this.options.registry}/${imageRepository(job.appName)}:${job.deploymentId}`;
    let deadline = Date.now() + timeoutMs;
    let recreated = false;
    // The group was read in this run: a 404 after that means it was deleted under the running build.
    let seen = false;
    let deletedUnderUs = 0;
    let transientFailures = 0;
    let logFailures = 0;

    for (;;) {
      if (job.signal.aborted) {
        await this.discard(name, job);
        throw abortError(job.signal, 'the build');
      }
      if (this.closing.signal.aborted) throw shuttingDown();

      let group: ContainerGroup;
      try {
        group = await this.client.containerGroups.get(this.options.resourceGroup, name, { abortSignal: signal });
        transientFailures = 0;
        seen = true;
      } catch (error) {
        if (signal.aborted) continue;
        if (isNotFound(error) && seen && ++deletedUnderUs <= LATE_DELETES_TOLERATED) {
          // A late DELETE from an earlier owner of this deployment that stalled between its lease
          // check and the request (the fencing window, lease-fence.ts): not this build's failure, and
          // not counted against the one-time path below. The build starts again in a new group.
          job.log(`Build container group ${name} was deleted under the running build (a late action of an earlier delivery?); creating it again`, 'warn');
          seen = false;
          await this.sandbox(job);
          continue;
        }
        if (isNotFound(error) && !recreated) {
          // A redelivered job after the group was removed (by hand, or a lost create): make it again.
          job.log(`Build container group ${name} is missing; creating it`, 'warn');
          recreated = true;
          await this.sandbox(job);
          continue;
        }
        if (isTransient(armFailure(error)) && ++transientFailures <= (this.options.transientFailureLimit ?? 5)) {
          await pause(backoff.next(), signal);
          continue;
        }
        throw armError(error, 'reading the build container group', 'SANDBOX_FAILED');
      }

      const container = kanikoContainer(group);
      const state = container?.instanceView?.currentState;
      // A build resumed by a later attempt keeps the deadline of the first one.
      if (state?.startTime !== undefined) deadline = Math.min(deadline, new Date(state.startTime).getTime() + timeoutMs);
      const terminated = state?.state === 'Terminated';
      if (state?.state === 'Running' || terminated) {
        const fresh = await this.copyLogs(name, follower, terminated, signal);
        if (fresh === null && terminated) {
          // The whole log (and the digest line in it) is needed before the build can be judged.
          if (++logFailures > (this.options.transientFailureLimit ?? 5)) throw new DeployError('DEPENDENCY_UNAVAILABLE', 'The build log could not be read', { retryable: true });
          await pause(backoff.next(), signal);
          continue;
        }
        if (fresh !== null && fresh > 0) backoff.reset();
      }

      if (terminated) {
        const exitCode = state.exitCode ?? -1;
        if (exitCode !== 0) {
          const tail = follower.lastLines();
          throw new DeployError(
            'BUILD_FAILED',
            `The build failed: kaniko exited with code ${exitCode}${state.detailStatus ? ` (${state.detailStatus})` : ''}.${tail.length > 0 ? `\nLast lines of the build log:\n${tail.join('\n')}` : ''}`,
            { details: { exitCode, logTail: tail } },
          );
        }
        const digest = follower.digest;
        if (digest === null) job.log('kaniko finished without reporting the pushed digest; the image is referenced by its tag', 'warn');
        else job.log(`Pushed ${image} (${digest})`);
        return { image, digest };
      }

      const pull = state?.state === 'Running' ? null : pullFailure(container);
      if (pull !== null && pull.count >= (this.options.imagePullAttempts ?? 3)) {
        await this.discard(name, job);
        throw new DeployError('IMAGE_PULL_FAILED', `The build container could not pull the kaniko image ${this.options.kanikoImage}: ${pull.message}`, {
          retryable: true,
          details: { image: this.options.kanikoImage, attempts: pull.count },
        });
      }
      if (group.provisioningState === 'Failed') {
        throw new DeployError('SANDBOX_FAILED', `The build container group ${name} failed${eventSummary(group)}`);
      }
      if (Date.now() >= deadline) {
        await this.discard(name, job);
        throw new DeployError('BUILD_TIMEOUT', `The build did not finish within ${Math.round(timeoutMs / 1000)} s`, { details: { logTail: follower.lastLines() } });
      }
      await pause(backoff.next(), signal);
    }
  }

  async deleteSandbox(deploymentId: string): Promise<void> {
    await this.deleteGroup(sandboxName(deploymentId));
  }

  /** By digest when kaniko reported one (what the revision pins), else by tag; only images in this builder's registry. */
  async imageExists(image: BuiltImage, signal: AbortSignal): Promise<boolean> {
    const { repository, tag } = splitImage(image.image);
    const prefix = `${this.options.registry}/`;
    const reference = image.digest ?? tag;
    if (!repository.startsWith(prefix) || reference === null) return false;
    return this.acr.manifestExists(repository.slice(prefix.length), reference, AbortSignal.any([signal, this.closing.signal]));
  }

  /**
   * Removes the image from ACR: its manifest (and so its tag and layers no other image shares), by
   * digest (https://learn.microsoft.com/azure/container-registry/container-registry-delete). The
   * digest comes from the reference (`repo@sha256:…`) or from what the tag names now. When other
   * tags still name the same manifest (another deployment's build came out byte-identical), only
   * this deployment's tag goes, so no other deployment loses its image. The worker's identity has
   * AcrPush + AcrDelete (infra/main.bicep); if ACR refuses it the metadata read, the manifest goes. Gone already: nothing to do;
   * run again after an interruption, it finishes (the tag stays until the manifest is deleted).
   */
  async deleteImage(_deploymentId: string, image: string): Promise<void> {
    const at = image.indexOf('@');
    const { repository, tag } = splitImage(at >= 0 ? image.slice(0, at) : image);
    const prefix = `${this.options.registry}/`;
    // Only images this builder pushed to its own registry.
    if (!repository.startsWith(prefix)) return;
    const name = repository.slice(prefix.length);
    const signal = this.closing.signal;
    const digest = at >= 0 ? image.slice(at + 1) : tag === null ? null : await this.acr.manifestDigest(name, tag, signal);
    if (digest === null) return;
    const tags = await this.acr.manifestTags(name, digest, signal);
    if (tags === null) return;
    // An identity without metadata/read cannot tell; builds are not reproducible byte for byte
    // (kaniko records build times), so the manifest is this deployment's own and goes.
    const others = tags === 'unknown' ? [] : tags.filter((other) => other !== tag);
    if (others.length > 0 && tag !== null) {
      await this.acr.untag(name, tag, signal);
      return;
    }
    if (others.length > 0) return;
    await this.acr.deleteManifest(name, digest, signal);
  }

  private containerGroup(job: BuildJob, contextUri: string, storageKey: string, registry: RegistryCredential): ContainerGroup {
    const repository = imageRepository(job.appName);
    const args = [
      `--context=${contextUri}`,
      '--dockerfile=Dockerfile',
      `--destination=${this.options.registry}/${repository}:${job.deploymentId}`,
      '--cache=true',
      `--cache-repo=${this.options.registry}/${this.options.cacheRepository ?? 'cache'}`,
      `--digest-file=${DIGEST_FILE}`,
      '--push-retry=3',
    ];
    const container: Container = {
      name: KANIKO_CONTAINER,
      image: this.options.kanikoImage,
      command: ['/busybox/sh', '-c', BUILD_SCRIPT, 'kaniko', ...args],
      resources: { requests: { cpu: this.options.cpu, memoryInGB: this.options.memoryInGB } },
      // Secure values are write-only in ARM: never returned by a GET, never shown in the portal.
      environmentVariables: [{ name: 'AZURE_STORAGE_ACCESS_KEY', secureValue: storageKey }],
      volumeMounts: [{ name: DOCKER_CONFIG_VOLUME, mountPath: '/kaniko/.docker', readOnly: true }],
    };
    return {
      location: this.options.location,
      tags: { deploymentId: job.deploymentId, projectId: job.projectId, orgId: job.orgId },
      osType: 'Linux',
      restartPolicy: 'Never',
      containers: [container],
      volumes: [{ name: DOCKER_CONFIG_VOLUME, secret: { 'config.json': Buffer.from(dockerConfigJson(this.options.registry, registry)).toString('base64') } }],
    };
  }

  private sandboxRecord(name: string, group: ContainerGroup): Record<string, string> {
    return { containerGroup: name, ...(group.id === undefined ? {} : { resourceId: group.id }), kanikoImage: this.options.kanikoImage };
  }

  /** The account key goes to kaniko; kaniko sends it to the context's host, so that must be our account. */
  private checkContext(contextUri: string): string {
    let url: URL;
    try {
      url = new URL(contextUri);
    } catch {
      throw new DeployError('SANDBOX_FAILED', 'The build context location is not a URL');
    }
    const endpoint = this.options.storageBlobEndpoint?.replace(/\/*$/, '/');
    const onAccount = endpoint === undefined ? url.hostname.startsWith(`${this.options.storageAccountName}.blob.`) : url.href.startsWith(endpoint);
    if (url.protocol !== 'https:' || !onAccount) {
      throw new DeployError('SANDBOX_FAILED', `The build context must be a blob of the storage account ${this.options.storageAccountName} over https`);
    }
    return contextUri;
  }

  private async pushCredential(signal: AbortSignal): Promise<RegistryCredential> {
    if (this.options.registryCredential !== undefined) return this.options.registryCredential(signal);
    return this.acr.pushCredential(signal);
  }

  private async findGroup(name: string, signal: AbortSignal): Promise<ContainerGroup | null> {
    try {
      return await this.client.containerGroups.get(this.options.resourceGroup, name, { abortSignal: signal });
    } catch (error) {
      if (isNotFound(error)) return null;
      if (signal.aborted) throw abortError(signal, 'the sandbox step');
      throw armError(error, 'reading the build container group', 'SANDBOX_FAILED');
    }
  }

  /** Copies the new log lines; null when the read failed transiently (the next poll reads again). */
  private async copyLogs(name: string, follower: BuildLogFollower, final: boolean, signal: AbortSignal): Promise<number | null> {
    try {
      const logs = await this.client.containers.listLogs(this.options.resourceGroup, name, KANIKO_CONTAINER, { abortSignal: signal });
      return follower.accept(logs.content ?? '', final);
    } catch (error) {
      if (signal.aborted || isTransient(armFailure(error))) return null;
      if (final) throw armError(error, 'reading the build log', 'SANDBOX_FAILED');
      return null;
    }
  }

  private async deleteGroup(name: string): Promise<void> {
    try {
      const poller = await this.client.containerGroups.beginDelete(this.options.resourceGroup, name, {
        updateIntervalInMs: this.options.operationPollIntervalMs ?? 2000,
      });
      await poller.pollUntilDone();
    } catch (error) {
      if (isNotFound(error)) return;
      throw armError(error, 'deleting the build container group', 'SANDBOX_FAILED');
    }
  }

  /**
   * Deletes the group of a stopped build; a failure is logged, not thrown, so the stop reason wins.
   * Not when the run lost its lease (or lock): the group, named after the deployment, is the one the
   * owning delivery follows; deleting it would restart that build from scratch.
   */
  private async discard(name: string, job: Pick<BuildJob, 'fence' | 'log'>): Promise<void> {
    const log: LogSink = job.log;
    // A lease that cannot be read (store down) counts as lost: better a group left for the sandbox
    // step's compensation or cleanup than one deleted under its owner.
    if (!(await job.fence(`deleting build container group ${name}`).catch(() => false))) return;
    try {
      await this.deleteGroup(name);
      log(`Deleted build container group ${name}`);
    } catch (error) {
      log(`Could not delete build container group ${name}: ${(error as Error).message}; the cleanup step tries again`, 'warn');
    }
  }

  private throwIfStopped(signal: AbortSignal, during: string): void {
    if (signal.aborted) throw abortError(signal, during);
    if (this.closing.signal.aborted) throw shuttingDown();
  }
}

function kanikoContainer(group: ContainerGroup): Container | undefined {
  return group.containers.find((container) => container.name === KANIKO_CONTAINER) ?? group.containers[0];
}

/** ACI keeps retrying a failed pull and reports each try as a `Failed` event on the container. */
function pullFailure(container: Container | undefined): { count: number; message: string } | null {
  const event = container?.instanceView?.events?.find((candidate) => candidate.name === 'Failed' && /pull/i.test(candidate.message ?? ''));
  if (event === undefined) return null;
  return { count: event.count ?? 1, message: event.message ?? 'image pull failed' };
}

function eventSummary(group: ContainerGroup): string {
  const events = [...(group.instanceView?.events ?? []), ...(kanikoContainer(group)?.instanceView?.events ?? [])]
    .filter((event) => event.type === 'Warning' || event.name === 'Failed')
    .map((event) => event.message)
    .filter((message): message is string => typeof message === 'string');
  return events.length === 0 ? '' : `: ${events.slice(-3).join('; ')}`;
}

function createError(error: unknown, kanikoImage: string, masker: SecretMasker): DeployError {
  const failure = armFailure(error);
  if (failure.code === 'InaccessibleImage') {
    return new DeployError('IMAGE_PULL_FAILED', `Azure cannot pull the kaniko image ${kanikoImage}: ${masker.mask(failure.message)}`, {
      details: { status: failure.status, armCode: failure.code, image: kanikoImage },
    });
  }
  return armError(error, 'creating the build container group', 'SANDBOX_FAILED', masker);
}

function shuttingDown(): DeployError {
  return new DeployError('DEPENDENCY_UNAVAILABLE', 'The worker is shutting down; the build container keeps running and the next attempt follows it', {
    retryable: true,
  });
}
