import { isDeepStrictEqual } from 'node:util';
import { randomBytes } from 'node:crypto';
import type {
  Configuration,
  ContainerAppProperties,
  CustomDomain,
  CustomHostnameAnalysisResult,
  ManagedCertificateProperties,
  ManagedEnvironmentProperties,
  ManagedServiceIdentity,
  RevisionProperties,
  Template,
  TrafficWeight,
} from '@azure/arm-appcontainers';
import { ArmHttpError, mergePatch } from './http.ts';
import type { ArmRequest, ArmResponse } from './http.ts';
import type { OperationProgress, Operations } from './lro.ts';
import type { RegistrySimulation } from './registry.ts';
import type { SwaggerBodyValidator } from './swagger-validator.ts';

export const APPS_API_VERSION = '2026-07-01';

/**
 * Wire shapes of Microsoft.App resources. The SDK's models flatten `properties` for the client;
 * on the wire they are nested, with the SDK's own `…Properties` types inside.
 */
interface WireResource<P> {
  id?: string;
  name?: string;
  type?: string;
  location?: string;
  tags?: Record<string, string>;
  identity?: ManagedServiceIdentity;
  properties?: P;
}
export type WireContainerApp = WireResource<ContainerAppProperties>;
type WireManagedCertificate = WireResource<ManagedCertificateProperties>;

/**
 * A property the SDK sends (api-version 2026-07-01) that the 2025-07-01 spec lacks: accepted only
 * when a test names it here with its reason. `path` is the JSON pointer of the object holding it.
 */
export interface SpecAllowance {
  definition: 'ContainerApp' | 'ManagedCertificate';
  path: string;
  property: string;
  reason: string;
}

/** How a new revision behaves. */
export type RevisionOutcome =
  | { kind: 'healthy'; pollsUntilHealthy?: number }
  | { kind: 'unhealthy' }
  | { kind: 'failed'; error?: string };

export interface DnsEntry {
  txt?: string[];
  cname?: string;
  a?: string;
}

interface RevisionState {
  name: string;
  template: Template;
  createdTime: Date;
  active: boolean;
  outcome: RevisionOutcome;
  polls: number;
  /** 0: the revision scales to zero once activated (development apps). */
  minReplicas: number;
  provisioningState: string;
  runningState: string;
  healthState: string;
  provisioningError: string | undefined;
}

interface AppState {
  name: string;
  resourceGroup: string;
  location: string;
  tags: Record<string, string> | undefined;
  identity: ManagedServiceIdentity | undefined;
  environmentId: string;
  configuration: Configuration;
  template: Template;
  provisioningState: 'InProgress' | 'Succeeded' | 'Deleting';
  revisions: Map<string, RevisionState>;
  latestRevisionName: string | undefined;
  /** The last write's long-running operation; ARM refuses another write while it runs. */
  operationId: string | undefined;
}

interface CertificateState {
  name: string;
  location: string;
  tags: Record<string, string> | undefined;
  subjectName: string;
  domainControlValidation: string;
  provisioningState: 'Pending' | 'Succeeded' | 'Failed';
  polls: number;
  error: string | undefined;
}

/** One change of the traffic split, with the health of every revision at that moment. */
export interface TrafficChange {
  app: string;
  weights: Record<string, number>;
  health: Record<string, string>;
}

const SECRET_NAME = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
const REVISION_SUFFIX = /^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$/;
/** Consumption cpu/memory pairs: 0.25 vCPU steps to 4, memory twice the cpu in GiB. */
function validSize(cpu: number | undefined, memory: string | undefined): boolean {
  if (cpu === undefined || memory === undefined) return false;
  return cpu > 0 && cpu <= 4 && Number.isInteger(cpu * 4) && memory === `${cpu * 2}Gi`;
}

/** Microsoft.App: container apps, their revisions, the managed environment and its managed certificates. */
export class ContainerAppsSimulation {
  /** How revisions created from now on behave. */
  revisionOutcome: RevisionOutcome = { kind: 'healthy', pollsUntilHealthy: 2 };
  /** `issued` after a few polls, `pending` forever, or `failed`. */
  certificateOutcome: 'issued' | 'pending' | 'failed' = 'issued';
  /**
   * Polls after which a PUT still waiting on its revision ends `Failed` with "Operation expired"
   * (what ARM answers for a revision that never becomes ready: Azure-Samples/tutor PR #70,
   * microsoft/azure-container-apps#395).
   */
  operationExpiresAfterPolls = 60;
  /** DNS as Azure sees it, by host name; see `addDomainRecords`. */
  readonly dns = new Map<string, DnsEntry>();
  readonly trafficChanges: TrafficChange[] = [];
  readonly environment: { name: string; resourceGroup: string; id: string; defaultDomain: string; staticIp: string; customDomainVerificationId: string; tags: Record<string, string> };
  private readonly apps = new Map<string, AppState>();
  private readonly certificates = new Map<string, CertificateState>();
  private readonly context: { base: () => string; subscriptionId: string; location: string; lroPolls: number };
  private readonly operations: Operations;
  private readonly registry: RegistrySimulation;
  private readonly validator: SwaggerBodyValidator;
  private readonly allowances: readonly SpecAllowance[];

  constructor(
    context: { base: () => string; subscriptionId: string; location: string; lroPolls: number; resourceGroup: string },
    operations: Operations,
    registry: RegistrySimulation,
    validator: SwaggerBodyValidator,
    allowances: readonly SpecAllowance[] = [],
  ) {
    this.context = context;
    this.operations = operations;
    this.registry = registry;
    this.validator = validator;
    this.allowances = allowances;
    const name = 'zepid-apps';
    this.environment = {
      name,
      resourceGroup: context.resourceGroup,
      id: `/subscriptions/${context.subscriptionId}/resourceGroups/${context.resourceGroup}/providers/Microsoft.App/managedEnvironments/${name}`,
      defaultDomain: `happy-sea-${randomBytes(4).toString('hex')}.${context.location}.azurecontainerapps.io`,
      staticIp: '20.61.8.17',
      customDomainVerificationId: randomBytes(32).toString('hex').toUpperCase(),
      tags: {},
    };
  }

  /** The records a user would add for `domain` pointing at `appName` (CNAME, or A for `apex`). */
  addDomainRecords(domain: string, appName: string, options: { apex?: boolean } = {}): void {
    this.dns.set(`asuid.${domain}`, { txt: [this.environment.customDomainVerificationId] });
    this.dns.set(domain, options.apex === true ? { a: this.environment.staticIp } : { cname: `${appName}.${this.environment.defaultDomain}` });
  }

  /** The app as stored (tags, configuration, template as sent): for assertions. */
  app(name: string): { tags: Record<string, string> | undefined; configuration: Configuration; template: Template; identity: ManagedServiceIdentity | undefined } | undefined {
    const app = this.apps.get(name);
    return app === undefined ? undefined : { tags: app.tags, configuration: app.configuration, template: app.template, identity: app.identity };
  }

  /** A revision's current state, for assertions. */
  revision(appName: string, revisionName: string): { active: boolean; healthState: string; runningState: string; trafficWeight: number } | undefined {
    const app = this.apps.get(appName);
    const revision = app?.revisions.get(revisionName);
    if (app === undefined || revision === undefined) return undefined;
    return { active: revision.active, healthState: revision.healthState, runningState: revision.runningState, trafficWeight: this.weights(app)[revisionName] ?? 0 };
  }

  /** Traffic weight per revision name, as the app's ingress resolves it now. */
  traffic(appName: string): Record<string, number> {
    const app = this.apps.get(appName);
    return app === undefined ? {} : this.weights(app);
  }

  certificate(name: string): { subjectName: string; provisioningState: string; tags: Record<string, string> | undefined } | undefined {
    const certificate = this.certificates.get(name);
    return certificate === undefined ? undefined : { subjectName: certificate.subjectName, provisioningState: certificate.provisioningState, tags: certificate.tags };
  }

  handle(request: ArmRequest, path: string, resourceGroup: string): ArmResponse | null {
    const environment = /^\/providers\/Microsoft\.App\/managedEnvironments\/([^/]+)(\/managedCertificates(?:\/([^/]+))?)?$/i.exec(path);
    if (environment !== null) {
      if (environment[1] !== this.environment.name || resourceGroup !== this.environment.resourceGroup) {
        throw new ArmHttpError(404, 'ResourceNotFound', `The managed environment '${environment[1] ?? ''}' was not found.`);
      }
      if (environment[2] !== undefined && environment[3] === undefined) {
        // ManagedCertificates_List (ManagedEnvironments.json 2025-07-01): one page here.
        if (request.method !== 'GET') throw new ArmHttpError(405, 'MethodNotAllowed', 'managed certificates are listed with GET');
        return { status: 200, body: { value: [...this.certificates.values()].map((certificate) => this.certificateView(certificate)) } };
      }
      if (environment[3] !== undefined) return this.certificateRequest(request, environment[3]);
      if (request.method !== 'GET') throw new ArmHttpError(405, 'MethodNotAllowed', 'the simulator only reads the managed environment');
      return { status: 200, body: this.environmentView() };
    }
    const app = /^\/providers\/Microsoft\.App\/containerApps\/([^/]+)(\/.*)?$/i.exec(path);
    if (app === null) return null;
    const name = app[1] ?? '';
    const rest = app[2] ?? '';
    if (rest === '') {
      switch (request.method) {
        case 'PUT':
          return this.put(request, resourceGroup, name);
        case 'PATCH':
          return this.patch(request, resourceGroup, name);
        case 'GET':
          return { status: 200, body: this.view(this.find(resourceGroup, name)) };
        case 'DELETE':
          return this.delete(resourceGroup, name);
        default:
          throw new ArmHttpError(405, 'MethodNotAllowed', `${request.method} is not supported on a container app`);
      }
    }
    if (rest === '/listCustomHostNameAnalysis' && request.method === 'POST') {
      return { status: 200, body: this.analysis(this.find(resourceGroup, name), request.url.searchParams.get('customHostname') ?? '') };
    }
    if (rest === '/revisions' && request.method === 'GET') {
      const state = this.find(resourceGroup, name);
      return { status: 200, body: { value: [...state.revisions.values()].map((revision) => this.revisionView(state, revision)) } };
    }
    const revision = /^\/revisions\/([^/]+)(\/activate|\/deactivate)?$/.exec(rest);
    if (revision !== null) {
      const state = this.find(resourceGroup, name);
      const target = state.revisions.get(revision[1] ?? '');
      if (target === undefined) throw new ArmHttpError(404, 'ContainerAppRevisionNotFound', `Revision '${revision[1] ?? ''}' was not found.`);
      if (revision[2] === undefined) {
        if (request.method !== 'GET') throw new ArmHttpError(405, 'MethodNotAllowed', 'revisions are read with GET');
        this.advance(state, target);
        return { status: 200, body: this.revisionView(state, target) };
      }
      if (request.method !== 'POST') throw new ArmHttpError(405, 'MethodNotAllowed', 'activate/deactivate are POST');
      if (revision[2] === '/deactivate') {
        if ((this.weights(state)[target.name] ?? 0) > 0) {
          throw new ArmHttpError(400, 'ContainerAppRevisionInUse', `Revision '${target.name}' receives traffic and cannot be deactivated.`);
        }
        target.active = false;
        target.runningState = 'Stopped';
        this.forgetOldInactive(state);
        // A PUT still waiting on this revision ends now (failed), rather than whenever it is next polled.
        if (state.operationId !== undefined) this.operations.inProgress(state.operationId);
      } else {
        target.active = true;
        target.polls = 0;
        target.runningState = 'Processing';
      }
      return { status: 200 };
    }
    return null;
  }

  private find(resourceGroup: string, name: string): AppState {
    const app = this.apps.get(name);
    if (app === undefined || app.resourceGroup !== resourceGroup) {
      throw new ArmHttpError(404, 'ResourceNotFound', `The Resource 'Microsoft.App/containerApps/${name}' under resource group '${resourceGroup}' was not found.`);
    }
    return app;
  }

  /**
   * The body against Microsoft.App 2025-07-01 (the official spec, as ARM's front door checks it):
   * unknown properties, wrong types and enums are a 400, except what a test allowed by name.
   */
  private checkBody(definition: SpecAllowance['definition'], body: unknown): void {
    const problems = this.validator.validate(definition, body).filter(
      (problem) => !this.allowances.some((allowed) => allowed.definition === definition && problem === `${allowed.path === '' ? '(body)' : allowed.path} must NOT have additional properties '${allowed.property}'`),
    );
    if (problems.length > 0) {
      throw new ArmHttpError(400, 'InvalidRequestContent', `The request content was invalid and could not be deserialized: ${problems.join('; ')}`, problems);
    }
  }

  /**
   * ContainerApps_Delete (ContainerApps.json 2025-07-01): 200/202/204, a long-running operation whose
   * final state comes via `Location`. A missing app is 204 (ARM's resource provider contract:
   * Azure/azure-resource-manager-rpc v1.0/resource-api-reference.md, "DELETE ... 204 No Content if
   * the resource did not exist"). A delete while a write runs meets the app's lock like any write
   * (microsoft/azure-container-apps#175). Meanwhile the app reads `Deleting`; when the operation ends,
   * the app, its revisions and their traffic are gone (its URL stops answering).
   */
  private delete(resourceGroup: string, name: string): ArmResponse {
    const existing = this.apps.get(name);
    if (existing === undefined || existing.resourceGroup !== resourceGroup) return { status: 204 };
    if (existing.provisioningState !== 'Deleting') this.refuseWhileWriting(existing);
    existing.provisioningState = 'Deleting';
    const operation = this.operations.start({
      base: this.context.base(),
      resultPath: `/subscriptions/${this.context.subscriptionId}/providers/Microsoft.App/locations/${this.context.location}/containerappOperationResults/{id}`,
      apiVersion: APPS_API_VERSION,
      polls: this.context.lroPolls,
      complete: () => {
        if (this.apps.get(name) === existing) {
          this.apps.delete(name);
          this.trafficChanges.push({ app: name, weights: {}, health: {} });
        }
      },
    });
    existing.operationId = operation.id;
    return { status: 202, headers: operation.headers };
  }

  /** Whether an app of that name exists now (a deleted one does not). */
  exists(name: string): boolean {
    return this.apps.has(name);
  }

  private put(request: ArmRequest, resourceGroup: string, name: string): ArmResponse {
    this.checkBody('ContainerApp', request.body);
    const body = request.body as WireContainerApp;
    const existing = this.apps.get(name);
    this.refuseWhileWriting(existing);
    const { state, newRevision } = this.apply(resourceGroup, name, body, existing);
    const operation = this.operations.start({
      base: this.context.base(),
      statusPath: `/subscriptions/${this.context.subscriptionId}/providers/Microsoft.App/locations/${this.context.location}/containerappOperationStatuses/{id}`,
      apiVersion: APPS_API_VERSION,
      polls: this.context.lroPolls,
      complete: () => {
        state.provisioningState = 'Succeeded';
      },
      progress: () => this.revisionProgress(state, newRevision),
    });
    state.operationId = operation.id;
    return { status: existing === undefined ? 201 : 200, body: this.view(state), headers: operation.headers };
  }

  /**
   * The PUT's operation ends only once the revision it created is provisioned and ready (running, or
   * activated and scaled to zero), and fails when the revision fails; a template that makes no new
   * revision ends at once. DESIGN.md "Facts for the Azure side" (checked 2026-12-06); the failure is
   * `ContainerAppOperationError` as in Azure-Samples/tutor PR #70. Each look at it is time passing
   * for the revision too.
   */
  private revisionProgress(state: AppState, newRevision: string | undefined): OperationProgress {
    if (newRevision === undefined) return 'Succeeded';
    const revision = state.revisions.get(newRevision);
    if (revision === undefined) return 'Succeeded';
    this.advance(state, revision);
    const failed = (details: string): OperationProgress => ({
      code: 'ContainerAppOperationError',
      message: `Failed to provision revision for container app '${state.name}'. Error details: ${details}`,
    });
    if (revision.provisioningState === 'Failed') return failed(revision.provisioningError ?? 'the revision failed');
    if (!revision.active) return failed(`The revision '${revision.name}' was deactivated before it became ready.`);
    if (isReady(revision)) return 'Succeeded';
    if (revision.polls >= this.operationExpiresAfterPolls) return failed('Operation expired');
    return 'InProgress';
  }

  /**
   * A write while the app's last write still runs is refused: 409 `ContainerAppLockConflict`
   * ("Cannot modify container App '…' because another modification is in progress",
   * microsoft/azure-container-apps#175).
   */
  private refuseWhileWriting(app: AppState | undefined): void {
    if (app?.operationId !== undefined && this.operations.inProgress(app.operationId)) {
      throw new ArmHttpError(409, 'ContainerAppLockConflict', `Cannot modify container App '${app.name}' because another modification is in progress. Please retry the operation.`);
    }
  }

  private patch(request: ArmRequest, resourceGroup: string, name: string): ArmResponse {
    this.checkBody('ContainerApp', request.body);
    const existing = this.find(resourceGroup, name);
    this.refuseWhileWriting(existing);
    const current: WireContainerApp = {
      location: existing.location,
      ...(existing.tags === undefined ? {} : { tags: existing.tags }),
      ...(existing.identity === undefined ? {} : { identity: existing.identity }),
      properties: { environmentId: existing.environmentId, configuration: existing.configuration, template: existing.template },
    };
    const merged = mergePatch(current, request.body) as WireContainerApp;
    const { state, newRevision } = this.apply(resourceGroup, name, merged, existing);
    const operation = this.operations.start({
      base: this.context.base(),
      resultPath: `/subscriptions/${this.context.subscriptionId}/providers/Microsoft.App/locations/${this.context.location}/containerappOperationResults/{id}`,
      apiVersion: APPS_API_VERSION,
      polls: this.context.lroPolls,
      complete: () => {
        state.provisioningState = 'Succeeded';
      },
      result: () => this.view(state),
      progress: () => this.revisionProgress(state, newRevision),
    });
    state.operationId = operation.id;
    return { status: 202, headers: operation.headers };
  }

  /** Checks a full app body like ARM does and stores it; a changed template makes a new revision. */
  private apply(resourceGroup: string, name: string, body: WireContainerApp, existing: AppState | undefined): { state: AppState; newRevision: string | undefined } {
    if (existing !== undefined && existing.resourceGroup !== resourceGroup) throw new ArmHttpError(409, 'Conflict', `An app named ${name} exists in another resource group`);
    if (typeof body !== 'object' || body === null) throw new ArmHttpError(400, 'InvalidRequestContent', 'The request body must be a JSON object.');
    if (typeof body.location !== 'string' || body.location === '') throw new ArmHttpError(400, 'LocationRequired', 'The location property is required for this definition.');
    const properties = body.properties;
    if (properties === undefined) throw new ArmHttpError(400, 'InvalidRequestContent', 'properties is required.');
    const environmentId = properties.environmentId ?? properties.managedEnvironmentId;
    if (environmentId?.toLowerCase() !== this.environment.id.toLowerCase()) {
      throw new ArmHttpError(400, 'ManagedEnvironmentNotFound', `The managed environment '${environmentId ?? '(none)'}' does not exist.`);
    }
    const template = properties.template;
    if (template === undefined) throw new ArmHttpError(400, 'InvalidRequestContent', 'properties.template is required.');
    const configuration = properties.configuration ?? {};
    const identities = assignedIdentities(body.identity);
    checkTags(body.tags);

    const suffix = template.revisionSuffix;
    if (suffix !== undefined && !REVISION_SUFFIX.test(suffix)) throw new ArmHttpError(400, 'InvalidRevisionSuffix', `The revision suffix '${suffix}' is invalid.`);
    const templateChanged = existing === undefined || !isDeepStrictEqual(normalizeJson(existing.template), normalizeJson(template));
    let newRevision: string | undefined;
    if (templateChanged) {
      newRevision = `${name}--${suffix ?? randomBytes(4).toString('hex').slice(0, 7)}`;
      if (existing?.revisions.has(newRevision) === true) {
        throw new ArmHttpError(400, 'ContainerAppRevisionSuffixInUse', `The revision '${newRevision}' already exists with another template; use a new revisionSuffix.`);
      }
    }
    const revisions = existing?.revisions ?? new Map<string, RevisionState>();
    checkConfiguration(configuration, identities, revisions, newRevision);
    checkSecretsInUse(configuration, revisions);
    checkTemplate(template, configuration);
    for (const domain of configuration.ingress?.customDomains ?? []) this.checkDomain(domain, name);

    const state: AppState = existing ?? {
      name,
      resourceGroup,
      location: body.location,
      tags: undefined,
      identity: undefined,
      environmentId,
      configuration: {},
      template: {},
      provisioningState: 'InProgress',
      revisions,
      latestRevisionName: undefined,
      operationId: undefined,
    };
    const before = this.weights(state);
    state.location = body.location;
    state.tags = body.tags;
    state.identity = body.identity;
    state.environmentId = environmentId;
    state.configuration = configuration;
    state.template = template;
    state.provisioningState = 'InProgress';
    if (newRevision !== undefined) {
      state.revisions.set(newRevision, {
        name: newRevision,
        template,
        createdTime: new Date(),
        active: true,
        outcome: this.pullOutcome(template, configuration) ?? this.revisionOutcome,
        polls: 0,
        minReplicas: template.scale?.minReplicas ?? 0,
        provisioningState: 'Provisioning',
        runningState: 'Processing',
        healthState: 'None',
        provisioningError: undefined,
      });
      state.latestRevisionName = newRevision;
      if (configuration.activeRevisionsMode === 'Single') {
        for (const revision of state.revisions.values()) if (revision.name !== newRevision) revision.active = false;
      }
    }
    // A lower limit applies at once, whether or not this write made a revision.
    this.forgetOldInactive(state);
    this.apps.set(name, state);
    const after = this.weights(state);
    if (!isDeepStrictEqual(before, after)) {
      this.trafficChanges.push({ app: name, weights: after, health: Object.fromEntries([...state.revisions.values()].map((revision) => [revision.name, revision.healthState])) });
    }
    return { state, newRevision };
  }

  /**
   * Container Apps keeps a bounded history of inactive revisions: 100 by default, or the app's
   * `configuration.maxInactiveRevisions` ("Historical record: By default, you have access to 100
   * inactive revisions, but you can adjust this threshold manually":
   * https://learn.microsoft.com/azure/container-apps/revisions). Beyond it the oldest inactive ones
   * are gone (a GET answers 404), so an old revision cannot always be activated again.
   */
  private forgetOldInactive(app: AppState): void {
    const limit = app.configuration.maxInactiveRevisions ?? 100;
    const inactive = [...app.revisions.values()].filter((revision) => !revision.active).sort((a, b) => a.createdTime.getTime() - b.createdTime.getTime());
    for (const revision of inactive.slice(0, Math.max(0, inactive.length - limit))) app.revisions.delete(revision.name);
  }

  /** A revision whose image the registry does not have (or may not give) fails to pull. */
  private pullOutcome(template: Template, configuration: Configuration): RevisionOutcome | null {
    for (const container of template.containers ?? []) {
      const image = container.image ?? '';
      if (!image.startsWith(`${this.registry.loginServer}/`)) continue;
      const registry = (configuration.registries ?? []).find((entry) => entry.server === this.registry.loginServer);
      if (registry?.identity === undefined && registry?.passwordSecretRef === undefined) {
        return { kind: 'failed', error: `ImagePullBackOff: pulling ${image}: unauthorized: authentication required` };
      }
      const at = image.indexOf('@');
      const repository = image.slice(this.registry.loginServer.length + 1, at >= 0 ? at : image.lastIndexOf(':'));
      const reference = at >= 0 ? image.slice(at + 1) : image.slice(image.lastIndexOf(':') + 1);
      const known = at >= 0 ? this.registry.hasDigest(repository, reference) : this.registry.digestOf(repository, reference) !== undefined;
      if (!known) return { kind: 'failed', error: `ImagePullBackOff: pulling ${image}: manifest unknown` };
    }
    return null;
  }

  private checkDomain(domain: CustomDomain, appName: string): void {
    if (!/^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/.test(domain.name)) {
      throw new ArmHttpError(400, 'InvalidCustomHostName', `'${domain.name}' is not a valid host name.`);
    }
    const binding = domain.bindingType ?? 'Disabled';
    if (!['Disabled', 'SniEnabled', 'Auto'].includes(binding)) throw new ArmHttpError(400, 'InvalidBindingType', `bindingType '${binding}' is not supported.`);
    if (!this.verified(domain.name, appName)) {
      throw new ArmHttpError(400, 'InvalidCustomHostNameValidation', `A TXT record pointing from asuid.${domain.name} to ${this.environment.customDomainVerificationId} and a CNAME to the app were not found.`);
    }
    if (binding === 'SniEnabled') {
      const certificate = [...this.certificates.values()].find((candidate) => `${this.environment.id}/managedCertificates/${candidate.name}`.toLowerCase() === (domain.certificateId ?? '').toLowerCase());
      if (certificate?.provisioningState !== 'Succeeded' || certificate.subjectName !== domain.name) {
        throw new ArmHttpError(400, 'InvalidCertificateForCustomDomain', `The certificate '${domain.certificateId ?? '(none)'}' is not an issued certificate for ${domain.name}.`);
      }
    }
  }

  private verified(host: string, appName: string): boolean {
    const txt = this.dns.get(`asuid.${host}`)?.txt ?? [];
    const entry = this.dns.get(host);
    return txt.includes(this.environment.customDomainVerificationId) && (entry?.cname === `${appName}.${this.environment.defaultDomain}` || entry?.a === this.environment.staticIp);
  }

  private analysis(app: AppState, host: string): CustomHostnameAnalysisResult {
    if (host === '') throw new ArmHttpError(400, 'InvalidRequestParameter', 'customHostname is required.');
    const verified = this.verified(host, app.name);
    const conflict = [...this.apps.values()].some((other) => other.name !== app.name && (other.configuration.ingress?.customDomains ?? []).some((domain) => domain.name === host));
    const entry = this.dns.get(host);
    return {
      hostName: host,
      isHostnameAlreadyVerified: verified,
      customDomainVerificationTest: verified ? 'Passed' : 'Failed',
      hasConflictOnManagedEnvironment: conflict,
      cNameRecords: entry?.cname === undefined ? [] : [entry.cname],
      txtRecords: this.dns.get(`asuid.${host}`)?.txt ?? [],
      aRecords: entry?.a === undefined ? [] : [entry.a],
      ...(verified ? {} : { customDomainVerificationFailureInfo: { code: 'InvalidCustomHostNameValidation', message: `A TXT record pointing from asuid.${host} to ${this.environment.customDomainVerificationId} was not found.` } }),
    };
  }

  private certificateRequest(request: ArmRequest, name: string): ArmResponse {
    if (request.method === 'GET') {
      const certificate = this.certificates.get(name);
      if (certificate === undefined) throw new ArmHttpError(404, 'ResourceNotFound', `The managed certificate '${name}' was not found.`);
      this.advanceCertificate(certificate);
      return { status: 200, body: this.certificateView(certificate) };
    }
    if (request.method === 'DELETE') {
      // ManagedCertificates_Delete answers 200 or 204 (ManagedEnvironments.json 2025-07-01); a missing
      // resource is 204, as ARM's resource provider contract has it for every DELETE
      // (Azure/azure-resource-manager-rpc v1.0/resource-api-reference.md).
      const certificate = this.certificates.get(name);
      if (certificate === undefined) return { status: 204 };
      // A certificate still bound to an app's custom domain is refused: "400 CertificateInUse:
      // Certificate '<name>' is used by existing custom domains <host>" (rajbos/ai-engineering-fluency PR #739).
      const id = `${this.environment.id}/managedCertificates/${name}`.toLowerCase();
      const users = [...this.apps.values()].flatMap((app) => (app.configuration.ingress?.customDomains ?? []).filter((domain) => domain.certificateId?.toLowerCase() === id).map((domain) => domain.name));
      if (users.length > 0) throw new ArmHttpError(400, 'CertificateInUse', `Certificate '${name}' is used by existing custom domains ${users.join(', ')}.`);
      this.certificates.delete(name);
      return { status: 200 };
    }
    if (request.method !== 'PUT') throw new ArmHttpError(405, 'MethodNotAllowed', `${request.method} is not supported on a managed certificate`);
    this.checkBody('ManagedCertificate', request.body);
    const body = request.body as WireManagedCertificate | undefined;
    if (body?.location === undefined) throw new ArmHttpError(400, 'LocationRequired', 'The location property is required for this definition.');
    checkTags(body.tags);
    const subjectName = body.properties?.subjectName;
    const validation = body.properties?.domainControlValidation;
    if (subjectName === undefined || validation === undefined) throw new ArmHttpError(400, 'InvalidRequestContent', 'properties.subjectName and properties.domainControlValidation are required.');
    if (!['CNAME', 'HTTP', 'TXT'].includes(validation)) throw new ArmHttpError(400, 'InvalidDomainControlValidation', `'${validation}' is not a domain control validation.`);
    const owner = [...this.apps.values()].find((app) => (app.configuration.ingress?.customDomains ?? []).some((domain) => domain.name === subjectName));
    if (owner === undefined) {
      throw new ArmHttpError(400, 'RequireCustomHostnameInEnvironment', `Creating a managed certificate requires hostname '${subjectName}' added to a container app in the environment.`);
    }
    if (!this.verified(subjectName, owner.name)) throw new ArmHttpError(400, 'InvalidCustomHostNameValidation', `The DNS records of ${subjectName} are not in place.`);
    const certificate: CertificateState = { name, location: body.location, tags: body.tags, subjectName, domainControlValidation: validation, provisioningState: 'Pending', polls: 0, error: undefined };
    this.certificates.set(name, certificate);
    const operation = this.operations.start({
      base: this.context.base(),
      statusPath: `/subscriptions/${this.context.subscriptionId}/providers/Microsoft.App/locations/${this.context.location}/managedCertificateOperationStatuses/{id}`,
      apiVersion: APPS_API_VERSION,
      polls: this.context.lroPolls,
      complete: () => undefined,
      // The create's operation lasts as long as the certificate is `Pending` (domain validation and
      // issuance take minutes: articles/container-apps/custom-domains-managed-certificates.md).
      progress: () => {
        this.advanceCertificate(certificate);
        if (certificate.provisioningState === 'Pending') return 'InProgress';
        if (certificate.provisioningState === 'Failed') return { code: 'ManagedCertificateValidationFailed', message: certificate.error ?? 'Domain validation failed' };
        return 'Succeeded';
      },
    });
    return { status: 201, body: this.certificateView(certificate), headers: operation.headers };
  }

  /**
   * A certificate stays `Pending` for a few polls (forever with `certificateOutcome: 'pending'`).
   * CNAME validation needs a CNAME record, which an apex domain cannot have: an apex domain (here, a
   * host whose DNS has an A record and no CNAME) needs `HTTP` validation, a subdomain `CNAME`
   * (MicrosoftDocs azure-docs articles/container-apps/custom-domains-managed-certificates.md;
   * microsoft/azure-container-apps#607: "Each domain type requires a different DNS record type and
   * validation method"), so CNAME validation of an apex domain ends `Failed`.
   */
  private advanceCertificate(certificate: CertificateState): void {
    certificate.polls += 1;
    if (certificate.provisioningState !== 'Pending' || certificate.polls < 2) return;
    const entry = this.dns.get(certificate.subjectName);
    if (certificate.domainControlValidation === 'CNAME' && entry?.cname === undefined) {
      certificate.provisioningState = 'Failed';
      certificate.error = `CNAME validation of ${certificate.subjectName} failed: it has no CNAME record (an apex domain needs HTTP validation and an A record).`;
      return;
    }
    if (certificate.domainControlValidation === 'HTTP' && entry?.a !== this.environment.staticIp && entry?.cname === undefined) {
      certificate.provisioningState = 'Failed';
      certificate.error = `HTTP validation of ${certificate.subjectName} failed: it does not resolve to the environment.`;
      return;
    }
    if (this.certificateOutcome === 'issued') certificate.provisioningState = 'Succeeded';
    if (this.certificateOutcome === 'failed') {
      certificate.provisioningState = 'Failed';
      certificate.error = 'Domain validation failed';
    }
  }

  /** One revision poll's worth of time. */
  private advance(app: AppState, revision: RevisionState): void {
    if (!revision.active) return;
    revision.polls += 1;
    if (revision.polls < 2) return;
    const outcome = revision.outcome;
    if (outcome.kind === 'failed') {
      revision.provisioningState = 'Failed';
      revision.runningState = 'Failed';
      revision.healthState = 'Unhealthy';
      revision.provisioningError = outcome.error ?? 'Container crashed on start';
      return;
    }
    revision.provisioningState = 'Provisioned';
    // A revision that may scale to zero reports `Activating` while its first replica starts, then
    // `ScaledToZero` with no replica left, never `Running` (DESIGN.md "Facts for the Azure side";
    // microsoft/vscode-azurecontainerapps PR #1088 treats ScaledToZero as a successful deployment).
    // The spec's RevisionRunningState enum (2025-07-01) lacks both values; it is modelAsString.
    if (revision.minReplicas === 0 && revision.runningState === 'Processing') revision.runningState = 'Activating';
    if (outcome.kind === 'unhealthy') {
      revision.runningState = 'Degraded';
      revision.healthState = 'Unhealthy';
      return;
    }
    if (revision.polls >= 1 + (outcome.pollsUntilHealthy ?? 2) && !isReady(revision)) {
      const before = this.weights(app);
      // No replica, nothing probed: health None (assumed; the sources name only the running state).
      revision.runningState = revision.minReplicas === 0 ? 'ScaledToZero' : 'Running';
      revision.healthState = revision.minReplicas === 0 ? 'None' : 'Healthy';
      const after = this.weights(app);
      if (!isDeepStrictEqual(before, after)) {
        this.trafficChanges.push({ app: app.name, weights: after, health: Object.fromEntries([...app.revisions.values()].map((candidate) => [candidate.name, candidate.healthState])) });
      }
    }
  }

  /** Effective weights: `latestRevision` resolves to the newest healthy active revision. */
  private weights(app: AppState): Record<string, number> {
    const weights: Record<string, number> = {};
    const latestReady = this.latestReady(app);
    for (const entry of app.configuration.ingress?.traffic ?? []) {
      const name = entry.revisionName ?? (entry.latestRevision === true ? latestReady : undefined);
      if (name !== undefined && (entry.weight ?? 0) > 0) weights[name] = (weights[name] ?? 0) + (entry.weight ?? 0);
    }
    return weights;
  }

  private latestReady(app: AppState): string | undefined {
    const ready = [...app.revisions.values()].filter((revision) => revision.active && isReady(revision));
    return ready.at(-1)?.name;
  }

  private view(app: AppState): WireContainerApp {
    const fqdn = `${app.name}.${this.environment.defaultDomain}`;
    const latest = app.latestRevisionName;
    const properties: ContainerAppProperties = {
      provisioningState: app.provisioningState,
      runningStatus: 'Running',
      managedEnvironmentId: app.environmentId,
      environmentId: app.environmentId,
      latestRevisionName: latest,
      latestReadyRevisionName: this.latestReady(app),
      latestRevisionFqdn: latest === undefined ? undefined : `${latest}.${this.environment.defaultDomain}`,
      customDomainVerificationId: this.environment.customDomainVerificationId,
      outboundIpAddresses: ['20.61.8.100'],
      configuration: {
        ...app.configuration,
        // ARM never returns secret values, only where they come from.
        secrets: app.configuration.secrets?.map(({ value: _value, ...rest }) => rest),
        ...(app.configuration.ingress === undefined ? {} : { ingress: { ...app.configuration.ingress, fqdn } }),
      },
      template: app.template,
    };
    return {
      id: `/subscriptions/${this.context.subscriptionId}/resourceGroups/${app.resourceGroup}/providers/Microsoft.App/containerApps/${app.name}`,
      name: app.name,
      type: 'Microsoft.App/containerApps',
      location: app.location,
      ...(app.tags === undefined ? {} : { tags: app.tags }),
      ...(app.identity === undefined ? {} : { identity: app.identity }),
      properties,
    };
  }

  private revisionView(app: AppState, revision: RevisionState): WireResource<RevisionProperties> {
    const properties: RevisionProperties = {
      createdTime: revision.createdTime,
      lastActiveTime: revision.createdTime,
      fqdn: `${revision.name}.${this.environment.defaultDomain}`,
      template: revision.template,
      active: revision.active,
      replicas: revision.active && revision.runningState === 'Running' ? Math.max(1, revision.minReplicas) : 0,
      trafficWeight: this.weights(app)[revision.name] ?? 0,
      ...(revision.provisioningError === undefined ? {} : { provisioningError: revision.provisioningError }),
      healthState: revision.healthState,
      provisioningState: revision.provisioningState,
      runningState: revision.runningState,
    };
    return {
      id: `/subscriptions/${this.context.subscriptionId}/resourceGroups/${app.resourceGroup}/providers/Microsoft.App/containerApps/${app.name}/revisions/${revision.name}`,
      name: revision.name,
      type: 'Microsoft.App/containerApps/revisions',
      properties,
    };
  }

  private environmentView(): WireResource<ManagedEnvironmentProperties> {
    return {
      id: this.environment.id,
      name: this.environment.name,
      type: 'Microsoft.App/managedEnvironments',
      location: this.context.location,
      tags: this.environment.tags,
      properties: {
        provisioningState: 'Succeeded',
        defaultDomain: this.environment.defaultDomain,
        staticIp: this.environment.staticIp,
        customDomainConfiguration: { customDomainVerificationId: this.environment.customDomainVerificationId },
        zoneRedundant: false,
      },
    };
  }

  private certificateView(certificate: CertificateState): WireManagedCertificate {
    return {
      id: `${this.environment.id}/managedCertificates/${certificate.name}`,
      name: certificate.name,
      type: 'Microsoft.App/managedEnvironments/managedCertificates',
      location: certificate.location,
      ...(certificate.tags === undefined ? {} : { tags: certificate.tags }),
      properties: {
        provisioningState: certificate.provisioningState,
        subjectName: certificate.subjectName,
        domainControlValidation: certificate.domainControlValidation,
        ...(certificate.provisioningState === 'Failed' ? { error: certificate.error ?? 'Domain validation failed' } : {}),
      },
    };
  }
}

function assignedIdentities(identity: ManagedServiceIdentity | undefined): Set<string> {
  const assigned = new Set<string>();
  if (identity === undefined) return assigned;
  if (!['None', 'SystemAssigned', 'UserAssigned', 'SystemAssigned,UserAssigned'].includes(identity.type)) {
    throw new ArmHttpError(400, 'InvalidIdentityType', `identity.type '${identity.type}' is not supported.`);
  }
  if (identity.type.includes('SystemAssigned')) assigned.add('system');
  if (identity.type.includes('UserAssigned')) {
    const ids = Object.keys(identity.userAssignedIdentities ?? {});
    if (ids.length === 0) throw new ArmHttpError(400, 'InvalidIdentity', 'UserAssigned identity type needs userAssignedIdentities.');
    for (const id of ids) {
      if (!/^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.ManagedIdentity\/userAssignedIdentities\/[^/]+$/i.test(id)) {
        throw new ArmHttpError(400, 'InvalidIdentity', `'${id}' is not a user-assigned identity resource id.`);
      }
      assigned.add(id.toLowerCase());
    }
  }
  return assigned;
}

function usesIdentity(identities: ReadonlySet<string>, identity: string): boolean {
  return identities.has(identity.toLowerCase()) || (identity.toLowerCase() === 'system' && identities.has('system'));
}

function checkTags(tags: unknown): void {
  if (tags === undefined) return;
  if (tags === null || typeof tags !== 'object') throw new ArmHttpError(400, 'InvalidTag', 'tags must be an object.');
  for (const [name, value] of Object.entries(tags)) {
    if (typeof value !== 'string' || name.length > 512 || value.length > 256 || /[<>%&\\?/]/.test(name)) {
      throw new ArmHttpError(400, 'InvalidTagNameCharacters', `The tag '${name}' is invalid.`);
    }
  }
}

function checkConfiguration(
  configuration: Configuration,
  identities: ReadonlySet<string>,
  revisions: ReadonlyMap<string, RevisionState>,
  newRevision: string | undefined,
): void {
  if (configuration.activeRevisionsMode !== undefined && !['Single', 'Multiple'].includes(configuration.activeRevisionsMode)) {
    throw new ArmHttpError(400, 'InvalidActiveRevisionsMode', `activeRevisionsMode '${configuration.activeRevisionsMode}' is not supported.`);
  }
  const secretNames = new Set<string>();
  for (const secret of configuration.secrets ?? []) {
    if (secret.name === undefined || !SECRET_NAME.test(secret.name)) throw new ArmHttpError(400, 'ContainerAppSecretInvalid', `Secret name '${secret.name ?? ''}' is invalid: lowercase alphanumerics, '-' or '.'.`);
    if (secretNames.has(secret.name)) throw new ArmHttpError(400, 'ContainerAppDuplicateSecretName', `Secret '${secret.name}' is defined twice.`);
    secretNames.add(secret.name);
    if ((secret.value === undefined) === (secret.keyVaultUrl === undefined)) {
      throw new ArmHttpError(400, 'ContainerAppSecretInvalid', `Secret '${secret.name}' needs exactly one of value and keyVaultUrl.`);
    }
    if (secret.keyVaultUrl !== undefined) {
      if (!/^https:\/\/[^/]+\/secrets\/[^/]+(\/[^/]*)?$/.test(secret.keyVaultUrl)) throw new ArmHttpError(400, 'ContainerAppSecretInvalid', `'${secret.keyVaultUrl}' is not a Key Vault secret URL.`);
      if (secret.identity === undefined || !usesIdentity(identities, secret.identity)) {
        throw new ArmHttpError(400, 'ContainerAppSecretKeyVaultIdentity', `Secret '${secret.name}' must name an identity assigned to the app.`);
      }
    }
  }
  for (const registry of configuration.registries ?? []) {
    if (registry.server === undefined) throw new ArmHttpError(400, 'ContainerAppRegistryInvalid', 'registries[].server is required.');
    if (registry.identity !== undefined) {
      if (!usesIdentity(identities, registry.identity)) throw new ArmHttpError(400, 'ContainerAppRegistryIdentity', `Registry identity '${registry.identity}' is not assigned to the app.`);
    } else if (registry.username === undefined || registry.passwordSecretRef === undefined || !secretNames.has(registry.passwordSecretRef)) {
      throw new ArmHttpError(400, 'ContainerAppRegistryInvalid', `Registry '${registry.server}' needs an identity, or a username and a passwordSecretRef naming a secret.`);
    }
  }
  const ingress = configuration.ingress;
  if (ingress !== undefined) {
    if (ingress.targetPort === undefined || !Number.isInteger(ingress.targetPort) || ingress.targetPort < 1 || ingress.targetPort > 65535) {
      throw new ArmHttpError(400, 'ContainerAppIngressInvalid', 'ingress.targetPort must be a port number.');
    }
    const traffic: TrafficWeight[] = ingress.traffic ?? [];
    let total = 0;
    for (const entry of traffic) {
      const weight = entry.weight ?? 0;
      if (!Number.isInteger(weight) || weight < 0 || weight > 100) throw new ArmHttpError(400, 'ContainerAppInvalidTrafficWeight', `Traffic weight ${weight} is invalid.`);
      if ((entry.revisionName === undefined) === (entry.latestRevision !== true)) {
        throw new ArmHttpError(400, 'ContainerAppInvalidTrafficWeight', 'Each traffic entry names either a revisionName or latestRevision: true.');
      }
      if (entry.revisionName !== undefined && entry.revisionName !== newRevision && !revisions.has(entry.revisionName)) {
        throw new ArmHttpError(400, 'ContainerAppRevisionNotFound', `Traffic names revision '${entry.revisionName}', which does not exist.`);
      }
      total += weight;
    }
    if (traffic.length > 0 && total !== 100) throw new ArmHttpError(400, 'ContainerAppInvalidTrafficWeight', `Traffic weights add up to ${total}, not 100.`);
  }
}

function checkTemplate(template: Template, configuration: Configuration): void {
  const containers = template.containers ?? [];
  if (containers.length === 0) throw new ArmHttpError(400, 'ContainerAppTemplateInvalid', 'template.containers needs at least one container.');
  const secretNames = new Set((configuration.secrets ?? []).map((secret) => secret.name));
  for (const container of containers) {
    if (container.name === undefined || container.name === '' || container.image === undefined || container.image === '') {
      throw new ArmHttpError(400, 'ContainerAppTemplateInvalid', 'Every container needs a name and an image.');
    }
    if (container.resources !== undefined && !validSize(container.resources.cpu, container.resources.memory)) {
      throw new ArmHttpError(400, 'ContainerAppInvalidResourceTotal', `The total requested CPU and memory (${container.resources.cpu ?? '?'} / ${container.resources.memory ?? '?'}) is not a supported combination.`);
    }
    for (const variable of container.env ?? []) {
      if (variable.name === undefined || variable.name === '') throw new ArmHttpError(400, 'ContainerAppTemplateInvalid', 'Every env variable needs a name.');
      if (variable.secretRef !== undefined && !secretNames.has(variable.secretRef)) {
        throw new ArmHttpError(400, 'ContainerAppSecretRefNotFound', `Env variable '${variable.name}' refers to secret '${variable.secretRef}', which is not defined.`);
      }
      if (variable.secretRef !== undefined && variable.value !== undefined) throw new ArmHttpError(400, 'ContainerAppTemplateInvalid', `Env variable '${variable.name}' has both value and secretRef.`);
    }
  }
  const scale = template.scale;
  if (scale !== undefined) {
    const min = scale.minReplicas ?? 0;
    const max = scale.maxReplicas ?? 10;
    if (min < 0 || max < 1 || min > max || max > 1000) throw new ArmHttpError(400, 'ContainerAppInvalidScale', `Scale ${min}-${max} is invalid.`);
    for (const rule of scale.rules ?? []) {
      if (rule.name === undefined || !/^[a-z0-9]([a-z0-9-.]*[a-z0-9])?$/.test(rule.name)) throw new ArmHttpError(400, 'ContainerAppInvalidScaleRule', `Scale rule name '${rule.name ?? ''}' is invalid.`);
      const concurrent = rule.http?.metadata?.concurrentRequests;
      if (rule.http !== undefined && (concurrent === undefined || !/^\d+$/.test(concurrent))) {
        throw new ArmHttpError(400, 'ContainerAppInvalidScaleRule', `HTTP scale rule '${rule.name}' needs metadata.concurrentRequests as a number string.`);
      }
    }
  }
}

/** Provisioned and either running healthy or activated and scaled to zero: what lets the PUT's operation end. */
function isReady(revision: RevisionState): boolean {
  if (revision.provisioningState !== 'Provisioned') return false;
  return (revision.runningState === 'Running' && revision.healthState === 'Healthy') || revision.runningState === 'ScaledToZero';
}

/**
 * A secret an active revision refers to cannot be removed: in Multiple mode ARM answers 400 (the
 * LRO timing out instead was microsoft/azure-container-apps#395, since fixed: hashicorp/
 * terraform-provider-azurerm PR #22493 "The Azure API will still return a 400 error if you attempt to
 * delete a secret that is currently in use"; microsoft/vscode-azurecontainerapps#1098: blocked in
 * Multiple mode, depends on whether the referencing revision is active). The code is the one of
 * microsoft/azure-container-apps#654 (`ContainerAppSecretInvalid`).
 */
function checkSecretsInUse(configuration: Configuration, revisions: ReadonlyMap<string, RevisionState>): void {
  const kept = new Set((configuration.secrets ?? []).map((secret) => secret.name));
  const missing = new Set<string>();
  for (const revision of revisions.values()) {
    if (!revision.active) continue;
    for (const container of revision.template.containers ?? []) {
      for (const variable of container.env ?? []) if (variable.secretRef !== undefined && !kept.has(variable.secretRef)) missing.add(variable.secretRef);
    }
  }
  if (missing.size > 0) {
    const names = [...missing].join(', ');
    throw new ArmHttpError(400, 'ContainerAppSecretInvalid', `Invalid Request: Container app secret(s) with name(s) '${names}' are referenced by active revisions and cannot be removed; add secrets: ${names}.`);
  }
}

/** JSON round trip: what a template compares as once stored (undefined members dropped). */
function normalizeJson(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value ?? null)) as unknown;
}
