import { ContainerAppsAPIClient } from '@azure/arm-appcontainers';
import type { ContainerApp, CustomDomain, EnvironmentVar, ManagedCertificate, Revision, Secret, TrafficWeight } from '@azure/arm-appcontainers';
import type { TokenCredential } from '@azure/identity';
import type { DependencyHealth, DnsRecord, Environment, LogSink, RevisionInfo, RevisionSpec, RollbackTarget, Runtime, SecretStore, ServingTarget } from '@zepid/core';
import { DeployError, isLeaseLost, probe, revisionSuffix, sha256Hex } from '@zepid/core';
import { armError, armFailure, isNotFound, isTransient } from '../aci/arm-errors.ts';
import { splitImage } from '../aci/builder.ts';
import { Backoff, abortError, pause } from '../aci/polling.ts';
import { LeaseFence } from '../lease-fence.ts';
import { customDomainRecords, managedCertificateName } from './custom-domain.ts';
import { HTTP_CONCURRENT_REQUESTS, scaleFor } from './scale.ts';
import type { ScaleProfile } from './scale.ts';

export interface ContainerAppsRuntimeOptions {
  subscriptionId: string;
  /** Resource group of the apps (and their managed certificates' environment, unless its id says otherwise). */
  resourceGroup: string;
  location: string;
  credential: TokenCredential;
  /** ARM endpoint; tests point it at a simulator. Default https://management.azure.com. */
  armEndpoint?: string | undefined;
  /** Scope of ARM tokens; stays the public ARM audience when the endpoint is a simulator. */
  armScope?: string | undefined;
  /** Resource id of the managed environment apps run in. */
  environmentId: string;
  /** ACR login server images are pulled from. */
  registry: string;
  /** Resource id of the user-assigned identity apps use to pull from ACR and read Key Vault. */
  appsIdentityId: string;
  /** Where env variable values are: Key Vault secret URIs, never the values. */
  secrets: Pick<SecretStore, 'references'>;
  /** Longest wait for a new revision to become healthy before DEPLOY_UNHEALTHY. */
  healthTimeoutMs?: number | undefined;
  /** First and longest wait between revision polls. */
  pollIntervalMs?: number | undefined;
  maxPollIntervalMs?: number | undefined;
  /** Interval of the SDK's long-running-operation polls. */
  operationPollIntervalMs?: number | undefined;
  /** Longest wait for a managed certificate before the domain is left for the next deployment. */
  certificateTimeoutMs?: number | undefined;
  /** Replaces the built-in scale profile of an environment. */
  scale?: Partial<Record<Environment, ScaleProfile>> | undefined;
  /** SDK retries of throttled or failed calls. */
  maxRetries?: number | undefined;
}

/** The app's container; one per app. */
export const APP_CONTAINER = 'app';
/** App tag remembering the revision that served before the current deployment, for a redelivered deploy step. */
const PREVIOUS_REVISION_TAG = 'previousRevision';
const RUNNING_STATES = new Set(['Running', 'RunningAtMaxScale']);

interface EnvironmentRef {
  resourceGroup: string;
  name: string;
}

export function parseEnvironmentId(environmentId: string): EnvironmentRef {
  const match = /\/resourceGroups\/([^/]+)\/providers\/Microsoft\.App\/managedEnvironments\/([^/]+)$/i.exec(environmentId);
  if (match?.[1] === undefined || match[2] === undefined) throw new Error(`Not a managed environment resource id: ${environmentId}`);
  return { resourceGroup: match[1], name: match[2] };
}

/** `<app>--<suffix>`: how Container Apps names the revision of a template with that suffix. */
export function revisionName(appName: string, deploymentId: string): string {
  return `${appName}--${revisionSuffix(deploymentId)}`;
}

/** Container Apps secret names are lowercase `[a-z0-9-]`; one per deployment and env variable, so revisions keep their own. */
export function secretName(deploymentId: string, envName: string): string {
  const readable = envName.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'env';
  return `${readable}-${sha256Hex(envName).slice(0, 6)}-${revisionSuffix(deploymentId)}`;
}

/**
 * Runtime on Azure Container Apps. Each deployment is a revision of `<project>-<environment>` in
 * Multiple mode: the new revision starts with no traffic, and only once it is provisioned, running
 * and healthy does all traffic move to it. The revision before stays active (with no traffic) so a
 * rollback is instant; older ones are deactivated.
 */
export class ContainerAppsRuntime implements Runtime {
  private readonly options: ContainerAppsRuntimeOptions;
  private readonly client: ContainerAppsAPIClient;
  private readonly environment: EnvironmentRef;
  private readonly closing = new AbortController();
  private readonly fence = new LeaseFence();

  constructor(options: ContainerAppsRuntimeOptions) {
    this.options = options;
    this.environment = parseEnvironmentId(options.environmentId);
    this.client = new ContainerAppsAPIClient(options.credential, options.subscriptionId, {
      endpoint: (options.armEndpoint ?? 'https://management.azure.com').replace(/\/+$/, ''),
      credentials: { scopes: [options.armScope ?? 'https://management.azure.com/.default'] },
      additionalPolicies: [{ policy: this.fence.policy, position: 'perRetry' }],
      ...(options.maxRetries === undefined ? {} : { retryOptions: { maxRetries: options.maxRetries } }),
    });
  }

  start(): Promise<void> {
    // Nothing to open: every ARM call is its own request.
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closing.abort();
    return Promise.resolve();
  }

  health(): Promise<DependencyHealth> {
    return probe(() => this.client.managedEnvironments.get(this.environment.resourceGroup, this.environment.name));
  }

  /**
   * Every ARM request of the deployment is fenced by its lease (lease-fence.ts): a run that lost its
   * deployment to another delivery, whose revision has the very same name, never moves its traffic or
   * deactivates it.
   */
  deploy(spec: RevisionSpec): Promise<RevisionInfo> {
    return this.fence.run(spec.fence, () => this.startRevision(spec));
  }

  private async startRevision(spec: RevisionSpec): Promise<RevisionInfo> {
    const signal = AbortSignal.any([spec.signal, this.closing.signal]);
    const revision = revisionName(spec.appName, spec.deploymentId);
    const rg = this.options.resourceGroup;
    this.throwIfStopped(spec.signal);

    const existing = await this.findApp(spec.appName, signal);
    const previousRevision = existing === null ? null : servingRevisionBefore(existing, revision);
    const references = spec.envVariableNames.length === 0 ? {} : await this.options.secrets.references(spec.deploymentId, spec.envVariableNames);
    const body = this.appBody(spec, existing, previousRevision, references);
    spec.log(
      existing === null
        ? `Creating container app ${spec.appName} with revision ${revision}`
        : `Updating container app ${spec.appName}: new revision ${revision}${previousRevision === null ? '' : `, traffic stays on ${previousRevision} until it is healthy`}`,
    );

    let app: ContainerApp;
    try {
      app = await this.client.containerApps.createOrUpdate(rg, spec.appName, body, { updateIntervalInMs: this.lroInterval(), abortSignal: signal });
    } catch (error) {
      if (signal.aborted) throw await this.stopped(spec, revision);
      throw appError(error, 'creating the revision');
    }

    const outcome = await this.waitHealthy(spec, revision, signal);
    if (outcome.kind === 'stopped') throw await this.stopped(spec, revision);
    if (outcome.kind === 'unhealthy') {
      await this.deactivate(spec.appName, revision, spec.log);
      const state = outcome.revision;
      const detail = [state?.provisioningState, state?.runningState, state?.healthState].filter(Boolean).join('/');
      const reason = state?.provisioningError ? `: ${state.provisioningError}` : '';
      const pull = /pull|manifest unknown|unauthorized/i.test(state?.provisioningError ?? '');
      throw new DeployError(
        pull ? 'IMAGE_PULL_FAILED' : 'DEPLOY_UNHEALTHY',
        `Revision ${revision} did not become healthy${outcome.timedOut ? ` within ${Math.round(this.healthTimeout() / 1000)} s` : ''} (${detail || 'no status'})${reason}; traffic stays on ${previousRevision ?? 'no revision'}`,
        { details: { revision, previousRevision, provisioningState: state?.provisioningState, runningState: state?.runningState, healthState: state?.healthState } },
      );
    }

    if (!servesAll(app, revision)) {
      spec.log(`Revision ${revision} is healthy; moving all traffic to it`);
      try {
        app = await this.setTraffic(spec.appName, [{ revisionName: revision, weight: 100 }], signal);
      } catch (error) {
        if (signal.aborted) throw await this.stopped(spec, revision);
        throw appError(error, 'moving traffic to the new revision');
      }
    }
    await this.deactivateOlder(spec.appName, new Set([revision, ...(previousRevision === null ? [] : [previousRevision])]), spec.log);

    const fqdn = app.configuration?.ingress?.fqdn ?? app.latestRevisionFqdn ?? `${spec.appName}`;
    let url = `https://${fqdn}`;
    let dnsRecords: DnsRecord[] = [];
    if (spec.customDomain !== null) {
      const domain = await this.customDomain(spec, spec.customDomain.toLowerCase(), app, fqdn, signal);
      if (domain.bound) url = `https://${spec.customDomain.toLowerCase()}`;
      dnsRecords = domain.dnsRecords;
    }
    spec.log(`Revision ${revision} serves ${url}`);
    return { revision, url, previousRevision, dnsRecords };
  }

  /**
   * All the app's traffic is on the revision (by name, or as the latest ready revision), the revision
   * is active, provisioned, running and healthy (what a new revision must reach before it gets the
   * traffic), and a custom domain, when given, is bound with a certificate. Reads only.
   */
  async isServing(target: ServingTarget, signal: AbortSignal): Promise<boolean> {
    const abortSignal = AbortSignal.any([signal, this.closing.signal]);
    this.throwIfStopped(signal);
    const app = await this.findApp(target.appName, abortSignal);
    if (app === null || !servesAllTraffic(app, target.revision)) return false;
    const domain = target.customDomain?.toLowerCase();
    if (domain !== undefined && !boundWithCertificate(app.configuration?.ingress?.customDomains?.find((binding) => binding.name.toLowerCase() === domain))) return false;
    let revision: Revision;
    try {
      revision = await this.client.containerAppsRevisions.getRevision(this.options.resourceGroup, target.appName, target.revision, { abortSignal });
    } catch (error) {
      if (isNotFound(error)) return false;
      throw appError(error, 'reading the serving revision');
    }
    return revision.active !== false && isHealthy(revision);
  }

  rollback(target: RollbackTarget, log: LogSink): Promise<void> {
    return this.fence.run(target.fence, () => this.rollBack(target, log));
  }

  private async rollBack(target: RollbackTarget, log: LogSink): Promise<void> {
    const app = await this.findApp(target.appName, this.closing.signal);
    if (app === null) {
      log(`Container app ${target.appName} does not exist; nothing to roll back`);
      return;
    }
    const previousName = target.previousRevision;
    if (previousName !== null && !servesAll(app, previousName)) {
      const previous = await this.call(() => this.findRevision(target.appName, previousName), 'reading the previous revision');
      if (previous === null) {
        log(`Revision ${previousName} no longer exists; traffic cannot go back to it`, 'warn');
      } else {
        if (previous.active === false) {
          log(`Activating revision ${previousName} again`);
          await this.call(() => this.client.containerAppsRevisions.activateRevision(this.options.resourceGroup, target.appName, previousName), 'activating the previous revision');
        }
        log(`Moving all traffic back to revision ${previousName}`);
        await this.call(() => this.setTraffic(target.appName, [{ revisionName: previousName, weight: 100 }], this.closing.signal), 'moving traffic back');
      }
    }
    await this.deactivate(target.appName, target.revision, log);
  }

  private appBody(spec: RevisionSpec, existing: ContainerApp | null, previousRevision: string | null, references: Record<string, string>): ContainerApp {
    const scale = scaleFor(spec.environment, spec.containerSize, this.options.scale);
    const identity = this.options.appsIdentityId;
    const secrets: Secret[] = [];
    const env: EnvironmentVar[] = [{ name: 'PORT', value: String(spec.plan.port) }];
    for (const name of spec.envVariableNames) {
      const keyVaultUrl = references[name];
      if (keyVaultUrl === undefined) throw new DeployError('START_FAILED', `The secret store has no value for env variable ${name}`);
      const secret = secretName(spec.deploymentId, name);
      secrets.push({ name: secret, keyVaultUrl, identity });
      env.push({ name, secretRef: secret });
    }
    // Secrets are app-wide: keep the ones the revision serving now refers to, so it keeps running
    // and a rollback to it still finds its values. Older deployments' secrets are dropped.
    const stillUsed = new Set((existing?.template?.containers ?? []).flatMap((container) => container.env ?? []).map((variable) => variable.secretRef));
    for (const secret of existing?.configuration?.secrets ?? []) {
      if (secret.name !== undefined && stillUsed.has(secret.name) && !secrets.some((own) => own.name === secret.name)) {
        secrets.push({ name: secret.name, keyVaultUrl: secret.keyVaultUrl, identity: secret.identity });
      }
    }
    const traffic: TrafficWeight[] = previousRevision === null ? [{ latestRevision: true, weight: 100 }] : [{ revisionName: previousRevision, weight: 100 }];
    const image = spec.imageDigest === null ? spec.image : `${splitImage(spec.image).repository}@${spec.imageDigest}`;
    if (spec.imageDigest === null) spec.log(`The image has no digest; the revision runs the tag ${spec.image}`, 'warn');
    const tags: Record<string, string> = { deploymentId: spec.deploymentId, projectId: spec.projectId, orgId: spec.orgId };
    if (previousRevision !== null) tags[PREVIOUS_REVISION_TAG] = previousRevision;
    return {
      location: this.options.location,
      tags,
      identity: { type: 'UserAssigned', userAssignedIdentities: { [identity]: {} } },
      environmentId: this.options.environmentId,
      configuration: {
        activeRevisionsMode: 'Multiple',
        ingress: {
          external: true,
          targetPort: spec.plan.port,
          transport: 'auto',
          allowInsecure: false,
          traffic,
          // A PUT replaces the configuration: keep the domains bound by earlier deployments.
          ...(existing?.configuration?.ingress?.customDomains === undefined ? {} : { customDomains: existing.configuration.ingress.customDomains }),
        },
        registries: [{ server: this.options.registry, identity }],
        secrets,
      },
      template: {
        revisionSuffix: revisionSuffix(spec.deploymentId),
        containers: [{ name: APP_CONTAINER, image, env, resources: { cpu: scale.cpu, memory: scale.memory } }],
        scale: {
          minReplicas: scale.minReplicas,
          maxReplicas: scale.maxReplicas,
          rules: [{ name: 'http-scaling', http: { metadata: { concurrentRequests: String(HTTP_CONCURRENT_REQUESTS) } } }],
        },
      },
    };
  }

  private async waitHealthy(
    spec: RevisionSpec,
    revision: string,
    signal: AbortSignal,
  ): Promise<{ kind: 'healthy' } | { kind: 'stopped' } | { kind: 'unhealthy'; revision: Revision | null; timedOut: boolean }> {
    const deadline = Date.now() + this.healthTimeout();
    const backoff = new Backoff(this.options.pollIntervalMs ?? 3000, this.options.maxPollIntervalMs ?? 15_000);
    let last: Revision | null = null;
    let reported = '';
    for (;;) {
      if (signal.aborted) return { kind: 'stopped' };
      try {
        last = await this.client.containerAppsRevisions.getRevision(this.options.resourceGroup, spec.appName, revision, { abortSignal: signal });
      } catch (error) {
        if (signal.aborted) return { kind: 'stopped' };
        // Just after the PUT the revision may not be listed yet, and a 5xx is worth another poll.
        if (!isNotFound(error) && !isTransient(armFailure(error))) throw appError(error, 'reading the new revision');
      }
      if (last !== null) {
        const state = `${last.provisioningState ?? '?'}/${last.runningState ?? '?'}/${last.healthState ?? '?'}`;
        if (state !== reported) {
          spec.log(`Revision ${revision}: provisioning ${last.provisioningState ?? 'unknown'}, running ${last.runningState ?? 'unknown'}, health ${last.healthState ?? 'unknown'}`);
          reported = state;
        }
        if (isHealthy(last)) return { kind: 'healthy' };
        if (last.provisioningState === 'Failed' || last.runningState === 'Failed') return { kind: 'unhealthy', revision: last, timedOut: false };
      }
      if (Date.now() >= deadline) return { kind: 'unhealthy', revision: last, timedOut: true };
      await pause(Math.min(backoff.next(), Math.max(1, deadline - Date.now())), signal);
    }
  }

  /** Binds the domain when Azure sees the DNS records, else returns the records to add; never fails the deployment. */
  private async customDomain(spec: RevisionSpec, domain: string, app: ContainerApp, fqdn: string, signal: AbortSignal): Promise<{ bound: boolean; dnsRecords: DnsRecord[] }> {
    const bindings = app.configuration?.ingress?.customDomains ?? [];
    const current = bindings.find((binding) => binding.name.toLowerCase() === domain);
    if (boundWithCertificate(current)) return { bound: true, dnsRecords: [] };

    let records: DnsRecord[];
    try {
      const environment = await this.client.managedEnvironments.get(this.environment.resourceGroup, this.environment.name, { abortSignal: signal });
      records = customDomainRecords(domain, fqdn, environment.customDomainConfiguration?.customDomainVerificationId ?? app.customDomainVerificationId, environment.staticIp);
      const analysis = await this.client.containerApps.listCustomHostNameAnalysis(this.options.resourceGroup, spec.appName, { customHostname: domain, abortSignal: signal });
      if (analysis.customDomainVerificationTest !== 'Passed' || analysis.hasConflictOnManagedEnvironment === true) {
        const why = analysis.hasConflictOnManagedEnvironment === true ? 'is already used by another app in the environment' : 'is not verified yet';
        spec.log(`Custom domain ${domain} ${why}. Add these DNS records and deploy again: ${records.map((record) => `${record.type} ${record.name} → ${record.value}`).join('; ')}`, 'warn');
        return { bound: false, dnsRecords: records };
      }
      if (current === undefined) {
        // Azure issues a managed certificate only for a host name already on the app.
        spec.log(`Adding custom domain ${domain} to ${spec.appName}`);
        await this.setCustomDomains(spec.appName, [...bindings, { name: domain, bindingType: 'Disabled' }], signal);
      }
      const certificate = await this.managedCertificate(spec, domain, signal);
      if (certificate === null) return { bound: false, dnsRecords: [] };
      await this.setCustomDomains(
        spec.appName,
        [...bindings.filter((binding) => binding.name.toLowerCase() !== domain), { name: domain, bindingType: 'SniEnabled', certificateId: certificate }],
        signal,
      );
      spec.log(`Custom domain ${domain} is bound with a managed certificate`);
      return { bound: true, dnsRecords: [] };
    } catch (error) {
      if (signal.aborted) throw abortError(spec.signal, 'the custom domain binding');
      spec.log(`Custom domain ${domain} could not be bound (${armFailure(error).message}); the app is live on https://${fqdn}`, 'warn');
      return { bound: false, dnsRecords: customDomainRecords(domain, fqdn, app.customDomainVerificationId, undefined) };
    }
  }

  /** The certificate's id once issued; null when issuance takes longer than allowed (the next deployment binds it). */
  private async managedCertificate(spec: RevisionSpec, domain: string, signal: AbortSignal): Promise<string | null> {
    const name = managedCertificateName(domain);
    const { resourceGroup, name: environment } = this.environment;
    let certificate: ManagedCertificate | null = null;
    try {
      certificate = await this.client.managedCertificates.get(resourceGroup, environment, name, { abortSignal: signal });
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    if (certificate === null || certificate.properties?.provisioningState === 'Failed') {
      spec.log(`Requesting a managed certificate for ${domain}`);
      certificate = await this.client.managedCertificates.createOrUpdate(resourceGroup, environment, name, {
        managedCertificateEnvelope: {
          location: this.options.location,
          tags: { deploymentId: spec.deploymentId, projectId: spec.projectId, orgId: spec.orgId },
          properties: { subjectName: domain, domainControlValidation: 'CNAME' },
        },
        updateIntervalInMs: this.lroInterval(),
        abortSignal: signal,
      });
    }
    const deadline = Date.now() + (this.options.certificateTimeoutMs ?? 5 * 60_000);
    const backoff = new Backoff(this.options.pollIntervalMs ?? 3000, this.options.maxPollIntervalMs ?? 15_000);
    for (;;) {
      const state = certificate.properties?.provisioningState;
      if (state === 'Succeeded' && certificate.id !== undefined) return certificate.id;
      if (state === 'Failed') {
        spec.log(`The managed certificate for ${domain} failed: ${certificate.properties?.error ?? 'no reason given'}`, 'warn');
        return null;
      }
      if (Date.now() >= deadline) {
        spec.log(`The managed certificate for ${domain} is still being issued; the next deployment binds it`, 'warn');
        return null;
      }
      await pause(backoff.next(), signal);
      if (signal.aborted) throw abortError(spec.signal, 'the custom domain binding');
      certificate = await this.client.managedCertificates.get(resourceGroup, environment, name, { abortSignal: signal });
    }
  }

  private async setTraffic(appName: string, traffic: TrafficWeight[], signal: AbortSignal): Promise<ContainerApp> {
    // A merge patch of the traffic alone: the template is untouched, so no revision is created.
    return this.client.containerApps.update(this.options.resourceGroup, appName, { location: this.options.location, configuration: { ingress: { traffic } } }, {
      updateIntervalInMs: this.lroInterval(),
      abortSignal: signal,
    });
  }

  private async setCustomDomains(appName: string, customDomains: CustomDomain[], signal: AbortSignal): Promise<ContainerApp> {
    return this.client.containerApps.update(this.options.resourceGroup, appName, { location: this.options.location, configuration: { ingress: { customDomains } } }, {
      updateIntervalInMs: this.lroInterval(),
      abortSignal: signal,
    });
  }

  /** Stops a revision; already inactive or gone is fine. Logs instead of throwing: it runs on failure paths. */
  private async deactivate(appName: string, revision: string, log: LogSink): Promise<void> {
    try {
      const current = await this.findRevision(appName, revision);
      if (current === null || current.active === false) return;
      await this.client.containerAppsRevisions.deactivateRevision(this.options.resourceGroup, appName, revision);
      log(`Deactivated revision ${revision}`);
    } catch (error) {
      log(`Could not deactivate revision ${revision}: ${armFailure(error).message}`, 'warn');
    }
  }

  /** Bounds the cost of Multiple mode: only the new revision and the one before stay active. */
  private async deactivateOlder(appName: string, keep: ReadonlySet<string>, log: LogSink): Promise<void> {
    try {
      for await (const revision of this.client.containerAppsRevisions.listRevisions(this.options.resourceGroup, appName)) {
        if (revision.name === undefined || keep.has(revision.name) || revision.active !== true || (revision.trafficWeight ?? 0) > 0) continue;
        await this.deactivate(appName, revision.name, log);
      }
    } catch (error) {
      log(`Could not list the older revisions of ${appName}: ${armFailure(error).message}`, 'warn');
    }
  }

  private async findApp(appName: string, signal: AbortSignal): Promise<ContainerApp | null> {
    try {
      return await this.client.containerApps.get(this.options.resourceGroup, appName, { abortSignal: signal });
    } catch (error) {
      if (isNotFound(error)) return null;
      throw appError(error, 'reading the container app');
    }
  }

  private async findRevision(appName: string, revision: string): Promise<Revision | null> {
    try {
      return await this.client.containerAppsRevisions.getRevision(this.options.resourceGroup, appName, revision);
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  }

  private async call<T>(operation: () => Promise<T>, action: string): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      throw appError(error, action);
    }
  }

  /**
   * A deploy stopped by its signal: the new revision gets no traffic and is stopped — unless the run
   * lost its lease (or lock): the revision is named after the deployment, so it is the one the owning
   * delivery is bringing up, and deactivating it would take the app down under that delivery.
   */
  private async stopped(spec: RevisionSpec, revision: string): Promise<DeployError> {
    if (spec.signal.aborted) {
      if (!isLeaseLost(spec.signal.reason) && (await spec.fence(`deactivating revision ${revision}`).catch(() => false))) {
        await this.deactivate(spec.appName, revision, spec.log);
      }
      return abortError(spec.signal, 'the deploy step');
    }
    return new DeployError('DEPENDENCY_UNAVAILABLE', 'The worker is shutting down during the deploy step', { retryable: true });
  }

  private throwIfStopped(signal: AbortSignal): void {
    if (signal.aborted) throw abortError(signal, 'the deploy step');
    if (this.closing.signal.aborted) throw new DeployError('DEPENDENCY_UNAVAILABLE', 'The worker is shutting down', { retryable: true });
  }

  private healthTimeout(): number {
    return this.options.healthTimeoutMs ?? 5 * 60_000;
  }

  private lroInterval(): number {
    return this.options.operationPollIntervalMs ?? 2000;
  }
}

/**
 * The revision serving (most of) the traffic before this deployment. If that is already the new one
 * (a redelivered deploy step after the switch), the app's tag remembers the one before.
 */
function servingRevisionBefore(app: ContainerApp, newRevision: string): string | null {
  let best: { name: string; weight: number } | null = null;
  for (const weight of app.configuration?.ingress?.traffic ?? []) {
    const name = weight.revisionName ?? (weight.latestRevision === true ? app.latestReadyRevisionName : undefined);
    const value = weight.weight ?? 0;
    if (name !== undefined && value > 0 && (best === null || value > best.weight)) best = { name, weight: value };
  }
  if (best === null) return null;
  if (best.name === newRevision) return app.tags?.[PREVIOUS_REVISION_TAG] ?? null;
  return best.name;
}

/** What a revision must show before it gets traffic, and to be kept by an identical redeploy. */
function isHealthy(revision: Revision): boolean {
  return revision.provisioningState === 'Provisioned' && revision.healthState === 'Healthy' && RUNNING_STATES.has(revision.runningState ?? '');
}

/** All traffic on the revision: named with weight 100, or `latestRevision` at 100 while it is the latest ready one. */
function servesAllTraffic(app: ContainerApp, revision: string): boolean {
  if (servesAll(app, revision)) return true;
  const traffic = app.configuration?.ingress?.traffic ?? [];
  return traffic.length === 1 && traffic[0]?.latestRevision === true && traffic[0].weight === 100 && app.latestReadyRevisionName === revision;
}

function boundWithCertificate(binding: CustomDomain | undefined): boolean {
  return binding?.bindingType === 'SniEnabled' && binding.certificateId !== undefined;
}

function servesAll(app: ContainerApp, revision: string): boolean {
  const traffic = app.configuration?.ingress?.traffic ?? [];
  return traffic.length === 1 && traffic[0]?.revisionName === revision && traffic[0].weight === 100;
}

/** ARM refusing the app (a bad template, a missing role) means the revision cannot start: START_FAILED. */
function appError(error: unknown, action: string): DeployError {
  return armError(error, action, 'START_FAILED');
}
