import { ContainerAppsAPIClient } from '@azure/arm-appcontainers';
import type { ContainerApp, CustomDomain, CustomHostnameAnalysisResult, EnvironmentVar, ManagedCertificate, Revision, Secret, TrafficWeight } from '@azure/arm-appcontainers';
import type { TokenCredential } from '@azure/identity';
import type { AppRef, DependencyHealth, DnsRecord, Environment, LogSink, RevisionInfo, RevisionSpec, RollbackTarget, Runtime, SecretStore, ServingTarget } from '@zepid/core';
import { DeployError, isLeaseLost, listenFix, probe, revisionSuffix, sha256Hex } from '@zepid/core';
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
  /**
   * Where env variable values are: Key Vault secret URIs, never the values. `valueAt` (the Key Vault
   * store has it) reads what a reference resolves to: a rollback reactivates an old revision only
   * when its references resolve to the values the rollback runs with; without it, never with env.
   */
  secrets: Pick<SecretStore, 'references'> & { valueAt?: (reference: string) => Promise<string | null> };
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
/**
 * A revision that may scale to zero (minReplicas 0, development) reports `Activating` while its
 * first replica starts and then `ScaledToZero`, never `Running`: that is a successful deployment
 * (DESIGN.md "Facts for the Azure side"; microsoft/vscode-azurecontainerapps PR #1088).
 */
const SCALED_TO_ZERO = 'ScaledToZero';
/** A scaled-to-zero revision starting a replica for a request: still the revision that serves. */
const ACTIVATING = 'Activating';
/** ARM's answer to a write while the app's previous write still runs (microsoft/azure-container-apps#175). */
const LOCK_CONFLICT = 'ContainerAppLockConflict';

interface EnvironmentRef {
  resourceGroup: string;
  name: string;
}

export function parseEnvironmentId(environmentId: string): EnvironmentRef {
  const match = /\/resourceGroups\/([^/]+)\/providers\/Microsoft\.App\/managedEnvironments\/([^/]+)$/i.exec(environmentId);
  if (match?.[1] === undefined || match[2] === undefined) throw new Error(`Not a managed environment resource id: ${environmentId}`);
  return { resourceGroup: match[1], name: match[2] };
}

/** `<app>--<suffix>`: how Container Apps names the revision of a template with that suffix; one per attempt. */
export function revisionName(appName: string, deploymentId: string, attempt = 1): string {
  return `${appName}--${revisionSuffix(deploymentId, attempt)}`;
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
    const revision = revisionName(spec.appName, spec.deploymentId, spec.attempt);
    this.throwIfStopped(spec.signal);

    const existing = await this.findApp(spec.appName, signal);
    const previousRevision = existing === null ? null : servingRevisionBefore(existing, revision);
    const references = spec.envVariableNames.length === 0 ? {} : await this.options.secrets.references(spec.deploymentId, spec.envVariableNames);
    if (spec.reactivateRevision !== undefined && spec.reactivateRevision !== null && existing !== null) {
      const reactivated = await this.reactivate(spec, spec.reactivateRevision, existing, references, signal);
      if (reactivated !== null) return reactivated;
    }
    const inUse = existing === null ? new Set<string>() : await this.secretsInUse(spec.appName, existing, spec.log, signal);
    const body = this.appBody(spec, revision, existing, previousRevision, references, inUse);
    spec.log(
      existing === null
        ? `Creating container app ${spec.appName} with revision ${revision}`
        : `Updating container app ${spec.appName}: new revision ${revision}${previousRevision === null ? '' : `, traffic stays on ${previousRevision} until it is ready`}`,
    );

    // Submitted only: ARM ends the PUT's operation once the revision has provisioned, or minutes later
    // with ContainerAppOperationError for an image that cannot start or be pulled. The revision is
    // polled here instead, within this step's deadline, so a bad one fails as what it is and is stopped.
    const healthDeadline = this.deadline(spec, this.healthTimeout());
    let operation: AppOperation;
    try {
      ({ operation } = await this.submit(spec.appName, body, healthDeadline.at, signal));
    } catch (error) {
      if (signal.aborted) throw await this.stopped(spec, revision);
      throw appError(error, 'creating the revision');
    }

    const outcome = await this.waitReady(spec, revision, operation, healthDeadline.at, signal);
    if (outcome.kind === 'stopped') throw await this.stopped(spec, revision);
    if (outcome.kind === 'unhealthy') {
      await this.deactivate(spec.appName, revision, spec.log);
      const state = outcome.revision;
      const detail = [state?.provisioningState, state?.runningState, state?.healthState].filter(Boolean).join('/');
      const problem = state?.provisioningError ?? outcome.operationError;
      const reason = problem === undefined ? '' : `: ${problem}`;
      const pull = /pull|manifest unknown|unauthorized/i.test(problem ?? '');
      const cutByDeadline = outcome.timedOut && healthDeadline.byStep;
      const within = outcome.timedOut ? ` within ${Math.round((healthDeadline.at - healthDeadline.from) / 1000)} s` : '';
      // With ingress on, Container Apps probes the target port (default TCP startup, readiness and
      // liveness probes: https://learn.microsoft.com/azure/container-apps/health-probes#default-configuration),
      // so a server on a fixed port of its own (Koa's README app, Hono's Node template: 3000) runs but
      // never gets healthy. Say what to change, as the local runtime does when it sees the port.
      const portHint =
        !pull && problem === undefined
          ? `. If its replicas run, check that the app listens on the port in PORT (${spec.plan.port}), e.g. \`${listenFix(spec.plan.framework) ?? 'app.listen(process.env.PORT)'}\`, not on a fixed port of its own`
          : '';
      throw new DeployError(
        pull ? 'IMAGE_PULL_FAILED' : cutByDeadline ? 'TIMEOUT' : 'DEPLOY_UNHEALTHY',
        `Revision ${revision} did not become ready${within}${cutByDeadline ? ' (the deployment timeout)' : ''} (${detail || 'no status'})${reason}; traffic stays on ${previousRevision ?? 'no revision'}${portHint}`,
        { details: { revision, previousRevision, provisioningState: state?.provisioningState, runningState: state?.runningState, healthState: state?.healthState } },
      );
    }
    if (outcome.revision.runningState === SCALED_TO_ZERO) {
      spec.log(`Revision ${revision} is provisioned and scaled to zero (minReplicas 0): its first replica started and stopped again; it starts on the next request`);
    }

    let app = outcome.app ?? existing;
    if (app === null || !servesAll(app, revision)) {
      spec.log(`Revision ${revision} is ready; moving all traffic to it`);
      try {
        app = await this.setTraffic(spec.appName, [{ revisionName: revision, weight: 100 }], signal);
      } catch (error) {
        if (signal.aborted) throw await this.stoppedAfterSwitch(spec, revision, previousRevision);
        throw appError(error, 'moving traffic to the new revision');
      }
    }
    return this.afterSwitch(spec, revision, previousRevision, app, signal);
  }

  /** The revision has all the traffic: older ones stop, the custom domain is bound, the URL answered. */
  private async afterSwitch(spec: RevisionSpec, revision: string, previousRevision: string | null, app: ContainerApp, signal: AbortSignal): Promise<RevisionInfo> {
    // From here the new revision takes the traffic: a stop moves it back before the step fails, as
    // the step records nothing for compensation to undo until it returns.
    await this.deactivateOlder(spec.appName, new Set([revision, ...(previousRevision === null ? [] : [previousRevision])]), spec.log);

    const fqdn = app.configuration?.ingress?.fqdn ?? app.latestRevisionFqdn ?? `${spec.appName}`;
    let url = `https://${fqdn}`;
    let dnsRecords: DnsRecord[] = [];
    if (spec.customDomain !== null) {
      let domain: { bound: boolean; dnsRecords: DnsRecord[] };
      try {
        domain = await this.customDomain(spec, spec.customDomain.toLowerCase(), app, fqdn, signal);
      } catch (error) {
        if (signal.aborted) throw await this.stoppedAfterSwitch(spec, revision, previousRevision);
        throw error;
      }
      if (domain.bound) url = `https://${spec.customDomain.toLowerCase()}`;
      dnsRecords = domain.dnsRecords;
    }
    if (signal.aborted) throw await this.stoppedAfterSwitch(spec, revision, previousRevision);
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
    // A scaled-to-zero revision with the traffic serves: it starts a replica on the next request.
    return revision.active !== false && (isReady(revision) || (revision.provisioningState === 'Provisioned' && revision.runningState === ACTIVATING && revision.healthState !== 'Unhealthy'));
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

  private appBody(
    spec: RevisionSpec,
    revision: string,
    existing: ContainerApp | null,
    previousRevision: string | null,
    references: Record<string, string>,
    inUse: ReadonlySet<string>,
  ): ContainerApp {
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
    // Secrets are app-wide: keep every one an active revision refers to (ARM refuses to remove those,
    // and the serving revision and the one kept for rollback need their values). Only secrets no
    // active revision uses are dropped.
    for (const secret of existing?.configuration?.secrets ?? []) {
      if (secret.name !== undefined && inUse.has(secret.name) && !secrets.some((own) => own.name === secret.name)) {
        secrets.push({ name: secret.name, ...(secret.keyVaultUrl === undefined ? {} : { keyVaultUrl: secret.keyVaultUrl }), ...(secret.identity === undefined ? {} : { identity: secret.identity }) });
      }
    }
    // A deploy step run again after the switch keeps the traffic where it is.
    const traffic: TrafficWeight[] =
      existing !== null && servesAll(existing, revision)
        ? [{ revisionName: revision, weight: 100 }]
        : previousRevision === null
          ? [{ latestRevision: true, weight: 100 }]
          : [{ revisionName: previousRevision, weight: 100 }];
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
        revisionSuffix: revisionSuffix(spec.deploymentId, spec.attempt),
        containers: [{ name: APP_CONTAINER, image, env, resources: { cpu: scale.cpu, memory: scale.memory } }],
        scale: {
          minReplicas: scale.minReplicas,
          maxReplicas: scale.maxReplicas,
          rules: [{ name: 'http-scaling', http: { metadata: { concurrentRequests: String(HTTP_CONCURRENT_REQUESTS) } } }],
        },
      },
    };
  }

  /**
   * Polls the new revision (and the PUT's operation) until the revision is ready and the operation
   * has ended, the revision fails, or the deadline passes.
   */
  private async waitReady(
    spec: RevisionSpec,
    revision: string,
    operation: AppOperation,
    deadline: number,
    signal: AbortSignal,
  ): Promise<
    | { kind: 'ready'; revision: Revision; app: ContainerApp | null }
    | { kind: 'stopped' }
    | { kind: 'unhealthy'; revision: Revision | null; operationError: string | undefined; timedOut: boolean }
  > {
    const backoff = new Backoff(this.options.pollIntervalMs ?? 3000, this.options.maxPollIntervalMs ?? 15_000);
    let last: Revision | null = null;
    let reported = '';
    let operationError: string | undefined;
    let reactivated = false;
    for (;;) {
      if (signal.aborted) return { kind: 'stopped' };
      if (!operation.isDone && operationError === undefined) {
        try {
          await operation.poll({ abortSignal: signal });
        } catch (error) {
          if (signal.aborted) return { kind: 'stopped' };
          const failure = armFailure(error);
          // A lost poll is worth another; a failed operation is the revision's failure, read below.
          if (!isTransient(failure)) operationError = `${failure.code ?? 'error'}: ${failure.message}`;
        }
      }
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
        if (last.provisioningState === 'Failed' || last.runningState === 'Failed') return { kind: 'unhealthy', revision: last, operationError, timedOut: false };
        // This attempt's revision, stopped by a run of it that was cut short: the same template makes
        // no new revision, so it is started again rather than waited on.
        if (last.active === false && !reactivated) {
          reactivated = true;
          spec.log(`Revision ${revision} exists but is inactive; activating it again`);
          try {
            await this.client.containerAppsRevisions.activateRevision(this.options.resourceGroup, spec.appName, revision, { abortSignal: signal });
          } catch (error) {
            if (signal.aborted) return { kind: 'stopped' };
            throw appError(error, 'activating the revision again');
          }
        }
        // Ready, and ARM done with the write (it refuses the traffic switch while the PUT still runs).
        if (isReady(last) && operation.isDone) return { kind: 'ready', revision: last, app: operation.result ?? null };
      }
      if (operationError !== undefined) return { kind: 'unhealthy', revision: last, operationError, timedOut: false };
      if (Date.now() >= deadline) return { kind: 'unhealthy', revision: last, operationError, timedOut: true };
      await pause(Math.min(backoff.next(), Math.max(1, deadline - Date.now())), signal);
    }
  }

  /**
   * Sends the PUT and returns once ARM accepted it. A write still running on the app (an earlier
   * deploy's, or one stopped midway) is answered 409 ContainerAppLockConflict: tried again until the deadline.
   */
  private async submit(appName: string, body: ContainerApp, deadline: number, signal: AbortSignal): Promise<{ operation: AppOperation }> {
    const backoff = new Backoff(this.options.pollIntervalMs ?? 3000, this.options.maxPollIntervalMs ?? 15_000);
    for (;;) {
      const poller = this.client.containerApps.createOrUpdate(this.options.resourceGroup, appName, body, { updateIntervalInMs: this.lroInterval(), abortSignal: signal });
      try {
        await poller.submitted();
        // Wrapped: the poller is a thenable, and an async function's result would wait for it to end.
        return { operation: poller };
      } catch (error) {
        if (signal.aborted || armFailure(error).code !== LOCK_CONFLICT || Date.now() >= deadline) throw error;
      }
      await pause(Math.min(backoff.next(), Math.max(1, deadline - Date.now())), signal);
    }
  }

  /**
   * The secrets any active revision of the app refers to: they stay in the next PUT. When the
   * revisions cannot be listed, every secret the app has is kept rather than risk removing one in use.
   */
  private async secretsInUse(appName: string, app: ContainerApp, log: LogSink, signal: AbortSignal): Promise<Set<string>> {
    const used = new Set<string>();
    try {
      for await (const revision of this.client.containerAppsRevisions.listRevisions(this.options.resourceGroup, appName, { abortSignal: signal })) {
        if (revision.active === false) continue;
        for (const container of revision.template?.containers ?? []) for (const variable of container.env ?? []) if (variable.secretRef !== undefined) used.add(variable.secretRef);
      }
    } catch (error) {
      if (signal.aborted) throw abortError(signal, 'the deploy step');
      log(`Could not list the revisions of ${appName} (${armFailure(error).message}); keeping all its secrets`, 'warn');
      for (const secret of app.configuration?.secrets ?? []) if (secret.name !== undefined) used.add(secret.name);
    }
    return used;
  }

  /** The end of a wait: the runtime's own limit, or earlier when the step's deadline says so. */
  private deadline(spec: RevisionSpec, limitMs: number): { from: number; at: number; byStep: boolean } {
    const from = Date.now();
    const own = from + limitMs;
    if (spec.deadline !== undefined && spec.deadline < own) return { from, at: Math.max(from, spec.deadline), byStep: true };
    return { from, at: own, byStep: false };
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
      const certificate = await this.managedCertificate(spec, domain, validationFor(domain, analysis), signal);
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

  /**
   * The certificate's id once issued; null when issuance takes longer than allowed (the next
   * deployment binds it). The create is only submitted: its operation lasts while the certificate is
   * `Pending` (validation takes minutes); the certificate is read until the step's deadline.
   */
  private async managedCertificate(spec: RevisionSpec, domain: string, validation: 'CNAME' | 'HTTP', signal: AbortSignal): Promise<string | null> {
    const name = managedCertificateName(domain);
    const { resourceGroup, name: environment } = this.environment;
    let certificate: ManagedCertificate | null = null;
    try {
      certificate = await this.client.managedCertificates.get(resourceGroup, environment, name, { abortSignal: signal });
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
    const deadline = this.deadline(spec, this.options.certificateTimeoutMs ?? 5 * 60_000).at;
    if (certificate === null || certificate.properties?.provisioningState === 'Failed') {
      spec.log(`Requesting a managed certificate for ${domain} (${validation} validation)`);
      const poller = this.client.managedCertificates.createOrUpdate(resourceGroup, environment, name, {
        managedCertificateEnvelope: {
          location: this.options.location,
          // appName: what removeApp finds its certificates by once the app (and its bindings) is gone.
          tags: { deploymentId: spec.deploymentId, projectId: spec.projectId, orgId: spec.orgId, appName: spec.appName },
          properties: { subjectName: domain, domainControlValidation: validation },
        },
        updateIntervalInMs: this.lroInterval(),
        abortSignal: signal,
      });
      await poller.submitted();
      // Just created: until ARM lists it, it is as good as Pending.
      certificate = { location: this.options.location, properties: { provisioningState: 'Pending' } };
    }
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
      await pause(Math.min(backoff.next(), Math.max(1, deadline - Date.now())), signal);
      if (signal.aborted) throw abortError(spec.signal, 'the custom domain binding');
      try {
        certificate = await this.client.managedCertificates.get(resourceGroup, environment, name, { abortSignal: signal });
      } catch (error) {
        if (!isNotFound(error)) throw error;
      }
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

  /**
   * A deploy stopped after the traffic moved to the new revision: the traffic goes back to the
   * revision before (which stayed active) before the new one is stopped, so a deployment never ends
   * failed or cancelled while its revision serves.
   */
  private async stoppedAfterSwitch(spec: RevisionSpec, revision: string, previousRevision: string | null): Promise<DeployError> {
    if (spec.signal.aborted) {
      if (previousRevision === null) {
        spec.log(`Revision ${revision} keeps the traffic: there is no revision before it to move it back to`, 'warn');
      } else {
        try {
          await this.setTraffic(spec.appName, [{ revisionName: previousRevision, weight: 100 }], AbortSignal.timeout(this.healthTimeout()));
          spec.log(`Moved all traffic back to revision ${previousRevision}`);
        } catch (error) {
          spec.log(`Could not move the traffic back to revision ${previousRevision}: ${armFailure(error).message}`, 'warn');
        }
      }
    }
    return this.stopped(spec, revision);
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

  /**
   * Rollback (issue 12): puts an earlier revision back instead of creating one, when it still exists
   * (Container Apps keeps the last 100 inactive revisions by default:
   * https://learn.microsoft.com/azure/container-apps/revisions) and its template is what this spec
   * would make, references resolving to the same values. The app runs in Multiple mode, where an
   * inactive revision is activated with POST …/revisions/{name}/activate
   * (ContainerAppsRevisions_ActivateRevision, ContainerAppsRevisions.json 2025-07-01) and takes no
   * traffic until the traffic moves to it. Like a new revision, it gets the traffic only once it
   * runs healthy; if it does not, it is deactivated again and the deployment fails with the traffic
   * where it was. Null: it cannot be reactivated (the reason is logged); the caller creates a new
   * revision pinned to the digest.
   */
  private async reactivate(spec: RevisionSpec, name: string, existing: ContainerApp, references: Record<string, string>, signal: AbortSignal): Promise<RevisionInfo | null> {
    let candidate: Revision | null;
    try {
      candidate = await this.client.containerAppsRevisions.getRevision(this.options.resourceGroup, spec.appName, name, { abortSignal: signal });
    } catch (error) {
      if (signal.aborted) throw abortError(spec.signal, 'the deploy step');
      if (!isNotFound(error)) throw appError(error, 'reading the revision to reactivate');
      candidate = null;
    }
    if (candidate === null) {
      spec.log(`Revision ${name} no longer exists (Container Apps keeps a limited history of inactive revisions); starting a new revision of the same image`);
      return null;
    }
    const difference = await this.templateDifference(spec, candidate, existing, references);
    if (difference !== null) {
      spec.log(`Revision ${name} is not reactivated: ${difference}; starting a new revision of the same image`);
      return null;
    }
    const previousRevision = servingRevisionBefore(existing, name);
    const activated = candidate.active === false;
    if (activated) {
      spec.log(`Reactivating revision ${name}${previousRevision === null ? '' : `; traffic stays on ${previousRevision} until it is ready`}`);
      try {
        await this.client.containerAppsRevisions.activateRevision(this.options.resourceGroup, spec.appName, name, { abortSignal: signal });
      } catch (error) {
        if (signal.aborted) throw abortError(spec.signal, 'the deploy step');
        throw appError(error, 'reactivating the revision');
      }
    } else {
      spec.log(`Revision ${name} is still active; moving the traffic back to it`);
    }
    const deadline = this.deadline(spec, this.healthTimeout());
    const backoff = new Backoff(this.options.pollIntervalMs ?? 3000, this.options.maxPollIntervalMs ?? 15_000);
    let state: Revision = candidate;
    let reported = '';
    while (!isReady(state)) {
      const failed = state.provisioningState === 'Failed' || state.runningState === 'Failed';
      if (failed || Date.now() >= deadline.at || signal.aborted) {
        if (activated && (!spec.signal.aborted || !isLeaseLost(spec.signal.reason))) await this.deactivate(spec.appName, name, spec.log);
        if (signal.aborted) throw abortError(spec.signal, 'the deploy step');
        const detail = [state.provisioningState, state.runningState, state.healthState].filter(Boolean).join('/');
        throw new DeployError(
          failed ? 'DEPLOY_UNHEALTHY' : deadline.byStep ? 'TIMEOUT' : 'DEPLOY_UNHEALTHY',
          `Revision ${name} did not become ready again (${detail || 'no status'})${state.provisioningError === undefined ? '' : `: ${state.provisioningError}`}; traffic stays on ${previousRevision ?? 'no revision'}`,
          { details: { revision: name, previousRevision, provisioningState: state.provisioningState, runningState: state.runningState, healthState: state.healthState } },
        );
      }
      await pause(Math.min(backoff.next(), Math.max(1, deadline.at - Date.now())), signal).catch(() => undefined);
      if (signal.aborted) continue;
      try {
        state = await this.client.containerAppsRevisions.getRevision(this.options.resourceGroup, spec.appName, name, { abortSignal: signal });
      } catch (error) {
        if (signal.aborted) continue;
        if (!isTransient(armFailure(error))) throw appError(error, 'reading the reactivated revision');
      }
      const seen = `${state.provisioningState ?? '?'}/${state.runningState ?? '?'}/${state.healthState ?? '?'}`;
      if (seen !== reported) {
        spec.log(`Revision ${name}: provisioning ${state.provisioningState ?? 'unknown'}, running ${state.runningState ?? 'unknown'}, health ${state.healthState ?? 'unknown'}`);
        reported = seen;
      }
    }
    let app = existing;
    if (!servesAll(existing, name)) {
      spec.log(`Revision ${name} is ready; moving all traffic to it`);
      try {
        app = await this.setTraffic(spec.appName, [{ revisionName: name, weight: 100 }], signal);
      } catch (error) {
        if (signal.aborted) throw await this.stoppedAfterSwitch(spec, name, previousRevision);
        throw appError(error, 'moving traffic to the reactivated revision');
      }
    }
    return this.afterSwitch(spec, name, previousRevision, app, signal);
  }

  /**
   * Why `revision` is not what `spec` would create now, or null when it is: the same image digest,
   * size and scale, port, env names, and each env reference resolving to the same value (read
   * through the secret store; never logged). A revision's secrets are app-wide, so each one it
   * refers to must still be in the app's configuration.
   */
  private async templateDifference(spec: RevisionSpec, revision: Revision, app: ContainerApp, references: Record<string, string>): Promise<string | null> {
    if (spec.imageDigest === null) return 'the image has no digest to compare';
    const containers = revision.template?.containers ?? [];
    const container = containers.find((candidate) => candidate.name === APP_CONTAINER);
    if (container === undefined || containers.length !== 1) return 'its containers differ';
    if (container.image !== `${splitImage(spec.image).repository}@${spec.imageDigest}`) return 'it runs another image';
    const scale = scaleFor(spec.environment, spec.containerSize, this.options.scale);
    if (container.resources?.cpu !== scale.cpu || container.resources.memory !== scale.memory) return 'its size differs';
    if (revision.template?.scale?.minReplicas !== scale.minReplicas || revision.template.scale.maxReplicas !== scale.maxReplicas) return 'its scale differs';
    const env = container.env ?? [];
    if (env.find((variable) => variable.name === 'PORT')?.value !== String(spec.plan.port)) return 'it listens on another port';
    const variables = env.filter((variable) => variable.name !== 'PORT');
    const names = variables.map((variable) => variable.name ?? '').sort();
    if (names.join('\u0000') !== [...spec.envVariableNames].sort().join('\u0000')) return 'its env variable names differ';
    if (variables.length === 0) return null;
    const store = this.options.secrets;
    if (store.valueAt === undefined) return 'the secret store cannot tell whether its env values are the same';
    // Called on the store: the Key Vault store's method needs its `this`.
    const valueAt = (reference: string) => store.valueAt?.(reference) ?? Promise.resolve(null);
    for (const variable of variables) {
      const name = variable.name ?? '';
      const secret = app.configuration?.secrets?.find((candidate) => candidate.name === variable.secretRef);
      const wanted = references[name];
      if (variable.secretRef === undefined || secret?.keyVaultUrl === undefined || wanted === undefined) return `the secret of env variable ${name} is no longer in the app`;
      const [before, now] = await Promise.all([valueAt(secret.keyVaultUrl), valueAt(wanted)]);
      if (before === null || before !== now) return `env variable ${name} has another value now`;
    }
    return null;
  }

  /**
   * App deletion (issue 12): DELETE of the Container App (ContainerApps_Delete, a long-running
   * operation awaited within `signal`; its revisions go with it, so the URL stops answering), then the
   * managed certificates this runtime created for its custom domains (tagged with the app; older ones
   * by the binding), which Azure refuses to delete while a domain still uses them
   * (`CertificateInUse`). Absent app or certificate: nothing to do, so a second run finishes what an
   * interrupted one left.
   */
  removeApp(app: AppRef, options: { signal: AbortSignal; log: LogSink }): Promise<void> {
    return this.removeAppNow(app, options.signal, options.log);
  }

  private async removeAppNow(app: AppRef, outer: AbortSignal, log: LogSink): Promise<void> {
    const signal = AbortSignal.any([outer, this.closing.signal]);
    const { resourceGroup } = this.options;
    const existing = await this.findApp(app.appName, signal);
    const bound = new Set<string>();
    if (existing === null) {
      log(`Container app ${app.appName} does not exist; nothing to delete`);
    } else {
      const owner = existing.tags ?? {};
      if ((owner.orgId !== undefined && owner.orgId !== app.orgId) || (owner.projectId !== undefined && owner.projectId !== app.projectId)) {
        throw new DeployError('CONFLICT', `Container app ${app.appName} belongs to another project; it is not deleted`);
      }
      for (const binding of existing.configuration?.ingress?.customDomains ?? []) {
        if (binding.certificateId !== undefined && binding.certificateId.toLowerCase().endsWith(`/managedcertificates/${managedCertificateName(binding.name)}`)) bound.add(managedCertificateName(binding.name));
      }
      log(`Deleting container app ${app.appName} and its revisions`);
      const backoff = new Backoff(this.options.pollIntervalMs ?? 3000, this.options.maxPollIntervalMs ?? 15_000);
      for (;;) {
        try {
          await this.client.containerApps.delete(resourceGroup, app.appName, { updateIntervalInMs: this.lroInterval(), abortSignal: signal });
          break;
        } catch (error) {
          if (signal.aborted) throw abortError(outer, 'removing the app');
          if (isNotFound(error)) break;
          // Another write (a deployment being cancelled) still holds the app's lock: wait it out.
          if (armFailure(error).code !== LOCK_CONFLICT) throw armError(error, 'deleting the container app', 'START_FAILED');
        }
        await pause(backoff.next(), signal).catch(() => undefined);
        if (signal.aborted) throw abortError(outer, 'removing the app');
      }
      log(`Deleted container app ${app.appName}`);
    }
    const { resourceGroup: environmentGroup, name: environment } = this.environment;
    try {
      for await (const certificate of this.client.managedCertificates.list(environmentGroup, environment, { abortSignal: signal })) {
        const tags = certificate.tags ?? {};
        const name = certificate.name;
        const ours = tags.orgId === app.orgId && (tags.appName === app.appName || (tags.appName === undefined && tags.projectId === app.projectId && name !== undefined && bound.has(name)));
        if (!ours || name === undefined) continue;
        try {
          await this.client.managedCertificates.delete(environmentGroup, environment, name, { abortSignal: signal });
          log(`Deleted managed certificate ${name} (${certificate.properties?.subjectName ?? 'custom domain'})`);
        } catch (error) {
          if (signal.aborted) throw abortError(outer, 'removing the app');
          if (isNotFound(error)) continue;
          if (armFailure(error).code === 'CertificateInUse') {
            log(`Managed certificate ${name} is still used by another app's custom domain; it is kept`, 'warn');
            continue;
          }
          throw armError(error, 'deleting a managed certificate', 'START_FAILED');
        }
      }
    } catch (error) {
      if (signal.aborted) throw abortError(outer, 'removing the app');
      throw armError(error, 'listing managed certificates', 'START_FAILED');
    }
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

/**
 * What a revision must show before it gets traffic, and to be kept by an identical redeploy:
 * provisioned and running healthy, or (minReplicas 0) activated and scaled to zero.
 */
function isReady(revision: Revision): boolean {
  if (revision.provisioningState !== 'Provisioned') return false;
  if (revision.runningState === SCALED_TO_ZERO) return revision.healthState !== 'Unhealthy';
  return revision.healthState === 'Healthy' && RUNNING_STATES.has(revision.runningState ?? '');
}

/**
 * How Azure validates a managed certificate: an apex domain cannot have a CNAME, so it is validated
 * over HTTP through its A record; a subdomain by its CNAME (MicrosoftDocs azure-docs
 * articles/container-apps/custom-domains-managed-certificates.md). Azure's analysis of the DNS decides
 * (it knows `shop.co.uk` from `example.co.uk`); counting labels is the fallback.
 */
export function validationFor(domain: string, analysis: Pick<CustomHostnameAnalysisResult, 'cNameRecords' | 'aRecords'>): 'CNAME' | 'HTTP' {
  if ((analysis.cNameRecords ?? []).length > 0) return 'CNAME';
  if ((analysis.aRecords ?? []).length > 0) return 'HTTP';
  return domain.split('.').length === 2 ? 'HTTP' : 'CNAME';
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

/** The PUT as submitted: polled alongside the revision, never awaited to its end. */
interface AppOperation {
  readonly isDone: boolean;
  readonly result: ContainerApp | undefined;
  poll(options?: { abortSignal?: AbortSignal }): Promise<unknown>;
}

/** ARM refusing the app (a bad template, a missing role) means the revision cannot start: START_FAILED. */
function appError(error: unknown, action: string): DeployError {
  return armError(error, action, 'START_FAILED');
}
