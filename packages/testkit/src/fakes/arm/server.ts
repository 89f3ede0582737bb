import { randomBytes } from 'node:crypto';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { testCertificate } from '../../tls.ts';
import { ACI_API_VERSION, AciSimulation } from './aci.ts';
import { APPS_API_VERSION, ContainerAppsSimulation } from './container-apps.ts';
import type { SpecAllowance, WireContainerApp } from './container-apps.ts';
import { FakeTokenCredential } from './credential.ts';
import { ArmHttpError, readRequest, writeResponse } from './http.ts';
import type { ArmRequest, ArmResponse } from './http.ts';
import { Operations } from './lro.ts';
import { RegistrySimulation } from './registry.ts';
import { CONTAINER_APPS_SPECS, CONTAINER_INSTANCE_SPEC, loadSwaggerValidator } from './swagger-validator.ts';

export interface ArmSimulatorOptions {
  subscriptionId?: string;
  resourceGroup?: string;
  location?: string;
  /** Polls a long-running operation stays InProgress. */
  lroPolls?: number;
  /** The Microsoft.ContainerInstance 2023-05-01 spec request bodies are checked against. */
  specPath?: string;
  /**
   * Properties of Container Apps bodies that Microsoft.App 2025-07-01 lacks but are let through,
   * each with its reason (the SDK calls 2026-07-01, which has no separate spec files). Default:
   * `CONTAINER_APPS_SPEC_ALLOWANCES`.
   */
  appsSpecAllowances?: readonly SpecAllowance[];
  /** The server closes itself after this long, so a forgotten simulator never keeps a test run alive. */
  lifetimeMs?: number;
}

/** A request as kept by the simulator: secret values blanked, no headers. */
export interface RecordedRequest {
  method: string;
  path: string;
  apiVersion: string | null;
  status: number;
  body?: unknown;
  error?: { code: string; message: string };
  /** The error answer was asked for by the test (scenario or injected fault). */
  scenario?: boolean;
  /** Who sent it: the label the test gave the bearer token (FakeTokenCredential.label), if any. */
  caller?: string;
  /** When it arrived (ms since the epoch). */
  at: number;
}

export interface FaultSpec {
  method?: string;
  path: RegExp;
  /** Only requests whose raw body matches (e.g. one deployment's revision suffix in an app PUT). */
  body?: RegExp;
  status: number;
  code: string;
  message?: string;
  /** How many matching requests fail. */
  times?: number;
}

export interface ArmSimulator {
  /** ARM endpoint to give the SDKs (`endpoint` / `$host`). */
  url: string;
  /** ACR login server served by the same listener, `127.0.0.1:<port>`. */
  registry: string;
  /** Pass this to the adapters; ARM calls need its tokens for the ARM scope. */
  credential: FakeTokenCredential;
  subscriptionId: string;
  resourceGroup: string;
  location: string;
  storageAccountName: string;
  /** The account key `listKeys` returns. */
  storageKey: string;
  /** Every request, in order, with secret values blanked. */
  requests: RecordedRequest[];
  aci: AciSimulation;
  apps: ContainerAppsSimulation;
  acr: RegistrySimulation;
  /** Makes matching requests fail (429, 503…) before they reach the handlers. */
  injectFault(fault: FaultSpec): void;
  /** Requests answered as malformed (schema or ARM rule broken, wrong api-version or token, unknown route), scenarios aside. */
  invalidRequests(): RecordedRequest[];
  close(): Promise<void>;
}

const ARM_SCOPE = 'https://management.azure.com/.default';

/**
 * What the runtime's bodies may carry beyond Microsoft.App 2025-07-01. Empty: every body the runtime
 * sends validates against the published spec as it is (packages/azure/test/containerapps-runtime.test.ts
 * checks it stays so).
 */
export const CONTAINER_APPS_SPEC_ALLOWANCES: readonly SpecAllowance[] = [];
const STORAGE_API_VERSION = '2023-05-01';
/** Answers that mean the client got the protocol wrong (a missing resource is a normal answer). */
const MALFORMED_CODES = new Set(['UnknownRoute', 'SubscriptionNotFound', 'ResourceGroupNotFound', 'OperationNotFound']);

/**
 * An HTTPS server (the test certificate, loopback, a free port) speaking the ARM calls of the ACI
 * builder and the Container Apps runtime, plus ACR's token endpoints. ACI bodies are validated against
 * the official Microsoft.ContainerInstance 2023-05-01 spec, Container Apps bodies (app PUT and PATCH,
 * managed certificate PUT) against Microsoft.App 2025-07-01, both as ARM's front door does (unknown
 * properties refused), then against ARM's rules.
 */
export async function startArmSimulator(options: ArmSimulatorOptions = {}): Promise<ArmSimulator> {
  const subscriptionId = options.subscriptionId ?? '00000000-1111-2222-3333-444444444444';
  const resourceGroup = options.resourceGroup ?? 'zepid-rg';
  const location = options.location ?? 'westeurope';
  const lroPolls = options.lroPolls ?? 2;
  const storageAccountName = 'zepidcontexts';
  const storageKey = randomBytes(64).toString('base64');
  const validator = loadSwaggerValidator(options.specPath ?? CONTAINER_INSTANCE_SPEC, { secretMaps: ['SecretVolume'] });
  const appsValidator = loadSwaggerValidator(CONTAINER_APPS_SPECS);
  const credential = new FakeTokenCredential();
  const operations = new Operations();
  const requests: RecordedRequest[] = [];
  const faults: (FaultSpec & { left: number })[] = [];
  let base = '';
  // Set once the port is known: the registry's login server and the operation URLs contain it.
  let simulations: { registry: RegistrySimulation; aci: AciSimulation; apps: ContainerAppsSimulation } | null = null;

  const route = (request: ArmRequest): ArmResponse => {
    if (simulations === null) throw new ArmHttpError(503, 'NotReady', 'the simulator is starting');
    const { registry, aci, apps } = simulations;
    const fault = faults.find(
      (candidate) =>
        candidate.left > 0 &&
        (candidate.method ?? request.method) === request.method &&
        candidate.path.test(request.url.pathname) &&
        (candidate.body === undefined || candidate.body.test(request.rawBody)),
    );
    if (fault !== undefined) {
      fault.left -= 1;
      throw new ArmHttpError(fault.status, fault.code, fault.message ?? `Injected ${fault.status}`, [], true);
    }
    const fromRegistry = registry.handle(request);
    if (fromRegistry !== null) return fromRegistry;

    const path = request.url.pathname;
    const subscription = /^\/subscriptions\/([^/]+)(\/.*)$/.exec(path);
    if (subscription === null) throw new ArmHttpError(404, 'UnknownRoute', `The simulator does not serve ${request.method} ${path}`);
    authorize(request, credential);
    if (subscription[1] !== subscriptionId) throw new ArmHttpError(404, 'SubscriptionNotFound', `The subscription '${subscription[1] ?? ''}' could not be found.`);
    const rest = subscription[2] ?? '';
    const apiVersion = request.url.searchParams.get('api-version');

    const operation = /^\/providers\/(Microsoft\.ContainerInstance|Microsoft\.App)\/locations\/[^/]+\/(operations|containerappOperationStatuses|managedCertificateOperationStatuses|containerappOperationResults)\/([^/]+)$/i.exec(rest);
    if (operation !== null) {
      const id = operation[3] ?? '';
      const answer = operation[2] === 'containerappOperationResults' ? operations.result(id) : operations.status(id);
      if (answer === null) throw new ArmHttpError(404, 'OperationNotFound', `Operation ${id} was not found.`);
      return answer;
    }

    const scoped = /^\/resourceGroups\/([^/]+)(\/.*)$/i.exec(rest);
    if (scoped === null) throw new ArmHttpError(404, 'UnknownRoute', `The simulator does not serve ${request.method} ${path}`);
    const group = scoped[1] ?? '';
    const resource = scoped[2] ?? '';
    if (group !== resourceGroup) throw new ArmHttpError(404, 'ResourceGroupNotFound', `Resource group '${group}' could not be found.`);

    if (/^\/providers\/Microsoft\.ContainerInstance\//i.test(resource)) {
      requireApiVersion(apiVersion, ACI_API_VERSION, 'Microsoft.ContainerInstance');
      const answer = aci.handle(request, resource, group);
      if (answer !== null) return answer;
    } else if (/^\/providers\/Microsoft\.App\//i.test(resource)) {
      requireApiVersion(apiVersion, APPS_API_VERSION, 'Microsoft.App');
      const answer = apps.handle(request, resource, group);
      if (answer !== null) return answer;
    } else if (resource === `/providers/Microsoft.Storage/storageAccounts/${storageAccountName}/listKeys` && request.method === 'POST') {
      requireApiVersion(apiVersion, STORAGE_API_VERSION, 'Microsoft.Storage');
      return { status: 200, body: { keys: [{ keyName: 'key1', value: storageKey, permissions: 'FULL' }] } };
    }
    throw new ArmHttpError(404, 'UnknownRoute', `The simulator does not serve ${request.method} ${path}`);
  };

  const certificate = testCertificate();
  const server = createServer({ key: certificate.key, cert: certificate.cert }, (incoming, outgoing) => {
    void (async () => {
      let request: ArmRequest | undefined;
      let answer: ArmResponse;
      let scenario = false;
      try {
        request = await readRequest(incoming, base);
        answer = route(request);
      } catch (error) {
        answer = error instanceof ArmHttpError ? error.toResponse() : new ArmHttpError(500, 'InternalServerError', (error as Error).message).toResponse();
        scenario = error instanceof ArmHttpError && error.scenario;
      }
      if (request !== undefined) {
        const caller = credential.labelOf(/^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1] ?? '');
        requests.push({ ...record(request, answer, validator), ...(scenario ? { scenario } : {}), ...(caller === undefined ? {} : { caller }) });
      }
      writeResponse(outgoing, answer);
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  base = `https://127.0.0.1:${port}`;
  const registry = new RegistrySimulation(`127.0.0.1:${port}`, credential);
  const context = { base: () => base, subscriptionId, location, lroPolls, resourceGroup };
  const aci = new AciSimulation(context, operations, registry, validator);
  const apps = new ContainerAppsSimulation(context, operations, registry, appsValidator, options.appsSpecAllowances ?? CONTAINER_APPS_SPEC_ALLOWANCES);
  simulations = { registry, aci, apps };

  let closed: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      clearTimeout(lifetime);
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closed;
  };
  const lifetime = setTimeout(() => void close(), options.lifetimeMs ?? 120_000);
  lifetime.unref();

  return {
    url: base,
    registry: registry.loginServer,
    credential,
    subscriptionId,
    resourceGroup,
    location,
    storageAccountName,
    storageKey,
    requests,
    aci,
    apps,
    acr: registry,
    injectFault(fault) {
      faults.push({ ...fault, left: fault.times ?? 1 });
    },
    invalidRequests() {
      return requests.filter(
        (request) => request.scenario !== true && ([400, 401, 405, 413].includes(request.status) || MALFORMED_CODES.has(request.error?.code ?? '')),
      );
    },
    close,
  };
}

function authorize(request: ArmRequest, credential: FakeTokenCredential): void {
  const token = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1];
  if (token === undefined) throw new ArmHttpError(401, 'AuthenticationFailed', 'Authentication failed. The Authorization header is missing.');
  const scope = credential.scopeOf(token);
  if (scope !== ARM_SCOPE) {
    throw new ArmHttpError(401, 'InvalidAuthenticationToken', `The access token is invalid or has the wrong audience (${scope ?? 'unknown token'}).`);
  }
}

function requireApiVersion(actual: string | null, expected: string, provider: string): void {
  if (actual !== expected) {
    throw new ArmHttpError(400, 'InvalidApiVersionParameter', `The simulator serves ${provider} at api-version ${expected}, not '${actual ?? '(none)'}'.`);
  }
}

/** The request as kept: bodies with secrets blanked, never an Authorization header. */
function record(request: ArmRequest, answer: ArmResponse, validator: ReturnType<typeof loadSwaggerValidator>): RecordedRequest {
  const entry: RecordedRequest = {
    method: request.method,
    path: request.url.pathname,
    apiVersion: request.url.searchParams.get('api-version'),
    status: answer.status,
    at: Date.now(),
  };
  const error = (answer.body as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  if (answer.status >= 400 && error !== undefined) entry.error = { code: String(error.code), message: String(error.message) };
  if (request.body === undefined) return entry;
  if (/Microsoft\.ContainerInstance\/containerGroups\/[^/]+$/i.test(entry.path) && request.method === 'PUT') {
    entry.body = validator.redact('ContainerGroup', request.body);
  } else if (/Microsoft\.App\/containerApps\/[^/]+$/i.test(entry.path)) {
    entry.body = redactAppSecrets(request.body as WireContainerApp);
  } else if (entry.path.startsWith('/oauth2/')) {
    entry.body = Object.fromEntries(
      Object.entries(request.body as Record<string, string>).map(([key, value]) => [key, /token|password|secret/i.test(key) ? '[redacted]' : value]),
    );
  } else {
    entry.body = request.body;
  }
  return entry;
}

function redactAppSecrets(body: WireContainerApp): unknown {
  const secrets = body.properties?.configuration?.secrets;
  if (secrets === undefined) return body;
  return {
    ...body,
    properties: {
      ...body.properties,
      configuration: { ...body.properties?.configuration, secrets: secrets.map((secret) => (secret.value === undefined ? secret : { ...secret, value: '[redacted]' })) },
    },
  };
}
