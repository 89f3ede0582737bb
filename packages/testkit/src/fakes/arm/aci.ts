import { createHash, randomBytes } from 'node:crypto';
import { ArmHttpError } from './http.ts';
import type { ArmRequest, ArmResponse } from './http.ts';
import type { Operations } from './lro.ts';
import type { RegistrySimulation } from './registry.ts';
import type { SwaggerBodyValidator } from './swagger-validator.ts';

export const ACI_API_VERSION = '2023-05-01';

/** What the next build container groups do; set per test on `sim.aci.scenario`. */
export interface BuildScenario {
  /** Answer the create PUT with this error instead of creating (quota, capacity…). */
  createError?: { status: number; code: string; message: string };
  /** `inaccessible`: ARM refuses the create (InaccessibleImage); `backoff`: the container keeps failing to pull. */
  kanikoImagePull?: 'ok' | 'inaccessible' | 'backoff';
  /** Polls of the create operation before the group is provisioned. */
  provisioningPolls?: number;
  /** Instance-view polls the container waits (pulling) before it runs. */
  startPolls?: number;
  /** kaniko's output; a plausible log of a Node build by default. */
  logLines?: string[];
  /** Lines the log grows by per instance-view poll. */
  linesPerPoll?: number;
  /** Also serve half of the next line, without its newline, as a log still being written does. */
  partialLines?: boolean;
  /** kaniko's exit code. */
  exitCode?: number;
  /** The container never terminates (cancel and timeout tests). */
  runForever?: boolean;
}

interface WireEnvironmentVariable {
  name: string;
  value?: string;
  secureValue?: string;
}
interface WireContainer {
  name: string;
  properties: {
    image: string;
    command?: string[];
    environmentVariables?: WireEnvironmentVariable[];
    volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
    resources: { requests: { cpu: number; memoryInGB: number } };
  } & Record<string, unknown>;
}
interface WireVolume {
  name: string;
  secret?: Record<string, string>;
  emptyDir?: Record<string, never>;
}
/** The wire shape of a container group body (already checked against the spec). */
export interface WireContainerGroup {
  location?: string;
  tags?: Record<string, string>;
  properties: {
    containers: WireContainer[];
    osType: string;
    restartPolicy?: string;
    volumes?: WireVolume[];
  } & Record<string, unknown>;
}

interface Run {
  /** Full output the container will print, in order. */
  output: string[];
  exitCode: number;
  digest: string | null;
  destination: string | null;
}

interface Group {
  name: string;
  resourceGroup: string;
  body: WireContainerGroup;
  scenario: Required<Omit<BuildScenario, 'createError'>>;
  provisioningState: 'Pending' | 'Succeeded' | 'Failed' | 'Deleting';
  ticks: number;
  printed: number;
  state: 'Waiting' | 'Running' | 'Terminated';
  startTime: string | null;
  finishTime: string | null;
  run: Run;
  logReads: number[];
}

const GROUP_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Microsoft.ContainerInstance container groups, with a fake kaniko inside. */
export class AciSimulation {
  /** Behaviour of groups created from now on. */
  scenario: BuildScenario = {};
  /** Names of groups deleted, in order. */
  readonly deleted: string[] = [];
  /**
   * `listLogs` returns at most the last 4 MB of a container's output, cut at a byte, not at a line
   * (DESIGN.md "Facts for the Azure side"; lawrencegripper/azbrowse PR #109: "without [tail] we get
   * the full logs up to 4MB"; Azure/azure-sdk-for-java#30152: the log content "just gives me the last
   * part of the log"). Whether 4 MB means 4,000,000 or 4 MiB bytes is not documented: 4 MiB here.
   */
  logWindowBytes = 4 * 1024 * 1024;
  private readonly groups = new Map<string, Group>();
  private readonly context: { base: () => string; subscriptionId: string; location: string; lroPolls: number };
  private readonly operations: Operations;
  private readonly registry: RegistrySimulation;
  private readonly validator: SwaggerBodyValidator;

  constructor(
    context: { base: () => string; subscriptionId: string; location: string; lroPolls: number },
    operations: Operations,
    registry: RegistrySimulation,
    validator: SwaggerBodyValidator,
  ) {
    this.context = context;
    this.operations = operations;
    this.registry = registry;
    this.validator = validator;
  }

  /** Names of the groups that exist now. */
  names(): string[] {
    return [...this.groups.keys()];
  }

  /** The create body as sent, secure values included: for assertions only (ARM never returns them). */
  sentBody(name: string): WireContainerGroup | undefined {
    return this.groups.get(name)?.body;
  }

  /** Lengths of the log content served by each log read of a group: shows the log growing between polls. */
  logReads(name: string): number[] {
    return [...(this.groups.get(name)?.logReads ?? [])];
  }

  /** The full output a group's container prints (what a test expects the deployment log to receive). */
  output(name: string): string[] {
    return [...(this.groups.get(name)?.run.output ?? [])];
  }

  handle(request: ArmRequest, path: string, resourceGroup: string): ArmResponse | null {
    const match = /^\/providers\/Microsoft\.ContainerInstance\/containerGroups(?:\/([^/]+)(?:\/containers\/([^/]+)\/logs)?)?$/i.exec(path);
    if (match === null) return null;
    const [, name, container] = match;
    if (name === undefined) {
      if (request.method !== 'GET') throw new ArmHttpError(405, 'MethodNotAllowed', `${request.method} is not supported on the collection`);
      const value = [...this.groups.values()].filter((group) => group.resourceGroup === resourceGroup).map((group) => this.view(group));
      return { status: 200, body: { value } };
    }
    if (container !== undefined) {
      if (request.method !== 'GET') throw new ArmHttpError(405, 'MethodNotAllowed', 'logs are read with GET');
      return this.logs(resourceGroup, name, container);
    }
    switch (request.method) {
      case 'PUT':
        return this.createOrUpdate(request, resourceGroup, name);
      case 'GET':
        return this.get(resourceGroup, name);
      case 'DELETE':
        return this.delete(resourceGroup, name);
      default:
        throw new ArmHttpError(405, 'MethodNotAllowed', `${request.method} is not supported on a container group`);
    }
  }

  private find(resourceGroup: string, name: string): Group {
    const group = this.groups.get(name);
    if (group === undefined || group.resourceGroup !== resourceGroup) {
      throw new ArmHttpError(404, 'ResourceNotFound', `The Resource 'Microsoft.ContainerInstance/containerGroups/${name}' under resource group '${resourceGroup}' was not found.`);
    }
    return group;
  }

  private createOrUpdate(request: ArmRequest, resourceGroup: string, name: string): ArmResponse {
    if (!GROUP_NAME.test(name)) {
      throw new ArmHttpError(400, 'InvalidContainerGroupName', `The container group name '${name}' is invalid: lowercase letters, numbers and '-', at most 63 characters.`);
    }
    const problems = this.validator.validate('ContainerGroup', request.body);
    if (problems.length > 0) {
      throw new ArmHttpError(400, 'InvalidRequestContent', `The request content was invalid and could not be deserialized: ${problems.join('; ')}`, problems);
    }
    const body = request.body as WireContainerGroup;
    checkSemantics(body, name, this.context.location);
    const scenario = this.scenario;
    if (scenario.createError !== undefined) throw new ArmHttpError(scenario.createError.status, scenario.createError.code, scenario.createError.message, [], true);
    const image = body.properties.containers[0]?.properties.image ?? '';
    if (scenario.kanikoImagePull === 'inaccessible') {
      throw new ArmHttpError(400, 'InaccessibleImage', `The image '${image}' in container group '${name}' is not accessible. Please check the image and registry credential.`, [], true);
    }
    const existed = this.groups.has(name);
    const group: Group = {
      name,
      resourceGroup,
      body,
      scenario: {
        kanikoImagePull: scenario.kanikoImagePull ?? 'ok',
        provisioningPolls: scenario.provisioningPolls ?? this.context.lroPolls,
        startPolls: scenario.startPolls ?? 1,
        logLines: scenario.logLines ?? [],
        linesPerPoll: Math.max(1, scenario.linesPerPoll ?? 2),
        partialLines: scenario.partialLines ?? false,
        exitCode: scenario.exitCode ?? 0,
        runForever: scenario.runForever ?? false,
      },
      provisioningState: 'Pending',
      ticks: 0,
      printed: 0,
      state: 'Waiting',
      startTime: null,
      finishTime: null,
      run: { output: [], exitCode: 0, digest: null, destination: null },
      logReads: [],
    };
    group.run = this.plan(group);
    this.groups.set(name, group);
    const operation = this.operations.start({
      base: this.context.base(),
      statusPath: `/subscriptions/${this.context.subscriptionId}/providers/Microsoft.ContainerInstance/locations/${this.context.location}/operations/{id}`,
      apiVersion: ACI_API_VERSION,
      polls: group.scenario.provisioningPolls,
      complete: () => {
        group.provisioningState = 'Succeeded';
      },
    });
    return { status: existed ? 200 : 201, body: this.view(group), headers: operation.headers };
  }

  private get(resourceGroup: string, name: string): ArmResponse {
    const group = this.find(resourceGroup, name);
    this.tick(group);
    return { status: 200, body: this.view(group) };
  }

  private delete(resourceGroup: string, name: string): ArmResponse {
    const group = this.groups.get(name);
    if (group === undefined || group.resourceGroup !== resourceGroup) return { status: 204 };
    if (group.provisioningState === 'Deleting') return { status: 202 };
    group.provisioningState = 'Deleting';
    const operation = this.operations.start({
      base: this.context.base(),
      statusPath: `/subscriptions/${this.context.subscriptionId}/providers/Microsoft.ContainerInstance/locations/${this.context.location}/operations/{id}`,
      apiVersion: ACI_API_VERSION,
      polls: this.context.lroPolls,
      complete: () => {
        this.groups.delete(name);
        this.deleted.push(name);
      },
    });
    return { status: 202, headers: operation.headers };
  }

  private logs(resourceGroup: string, name: string, container: string): ArmResponse {
    const group = this.find(resourceGroup, name);
    if (!group.body.properties.containers.some((candidate) => candidate.name === container)) {
      throw new ArmHttpError(404, 'ContainerNotFound', `The container '${container}' is not in container group '${name}'.`);
    }
    let content = group.run.output.slice(0, group.printed).map((line) => `${line}\n`).join('');
    const next = group.run.output[group.printed];
    if (group.scenario.partialLines && group.state === 'Running' && next !== undefined) content += next.slice(0, Math.ceil(next.length / 2));
    const bytes = Buffer.from(content, 'utf8');
    if (bytes.length > this.logWindowBytes) content = bytes.subarray(bytes.length - this.logWindowBytes).toString('utf8');
    group.logReads.push(content.length);
    return { status: 200, body: { content } };
  }

  /** One instance-view poll's worth of container time. */
  private tick(group: Group): void {
    if (group.provisioningState !== 'Succeeded' || group.state === 'Terminated') return;
    group.ticks += 1;
    if (group.scenario.kanikoImagePull === 'backoff') return;
    if (group.state === 'Waiting') {
      if (group.ticks <= group.scenario.startPolls) return;
      group.state = 'Running';
      group.startTime = new Date().toISOString();
    }
    group.printed = Math.min(group.run.output.length, group.printed + group.scenario.linesPerPoll);
    if (group.printed >= group.run.output.length && !group.scenario.runForever) {
      group.state = 'Terminated';
      group.finishTime = new Date().toISOString();
      if (group.run.exitCode === 0 && group.run.destination !== null && group.run.digest !== null) {
        const slash = group.run.destination.indexOf('/');
        const colon = group.run.destination.lastIndexOf(':');
        if (group.run.destination.slice(0, slash) === this.registry.loginServer && colon > slash) {
          this.registry.push(group.run.destination.slice(slash + 1, colon), group.run.destination.slice(colon + 1), group.run.digest);
        }
      }
    }
  }

  /**
   * What the fake kaniko does with the command it got: reads `--flag=value` arguments (as argv, or
   * as "$@" of a `sh -c` script), fails like kaniko when the context key or the push credential is
   * missing, and runs the shell's epilogue when it prints the digest file with printf.
   */
  private plan(group: Group): Run {
    const container = group.body.properties.containers[0];
    const command = container?.properties.command ?? [];
    let args = command;
    let script: string | null = null;
    if (/(^|\/)sh$/.test(command[0] ?? '') && command[1] === '-c') {
      script = command[2] ?? '';
      args = script.includes('"$@"') ? command.slice(4) : [];
    } else if (command[0] === '/kaniko/executor') {
      args = command.slice(1);
    }
    const flags = new Map<string, string>();
    for (const arg of args) {
      const match = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
      if (match?.[1] !== undefined) flags.set(match[1], match[2] ?? 'true');
    }
    const destination = flags.get('destination') ?? null;
    const context = flags.get('context') ?? '';
    const env = new Map((container?.properties.environmentVariables ?? []).map((variable) => [variable.name, variable.secureValue ?? variable.value]));
    const lines: string[] = [];
    let exitCode = group.scenario.exitCode;
    const digest = `sha256:${createHash('sha256').update(randomBytes(16)).digest('hex')}`;

    if (destination === null) {
      lines.push('Error: you must provide --destination, or use --no-push');
      exitCode = 1;
    } else if (/\.blob\.core\.windows\.net\//.test(context) && (env.get('AZURE_STORAGE_ACCESS_KEY') ?? '') === '') {
      lines.push('Error: error resolving source context: AZURE_STORAGE_ACCESS_KEY environment variable is not set');
      exitCode = 1;
    } else {
      const custom = group.scenario.logLines.length > 0;
      lines.push(...(custom ? group.scenario.logLines : defaultKanikoLog(context, flags.get('cache-repo') ?? null)));
      if (exitCode !== 0) {
        if (!custom) lines.push('error building image: error building stage: failed to execute command: waiting for process to exit: exit status 1');
      } else if (!this.registry.acceptsBasicAuth(this.dockerAuth(group, destination))) {
        lines.push(`error pushing image: failed to push to destination ${destination}: UNAUTHORIZED: authentication required`);
        exitCode = 1;
      } else {
        const repository = destination.includes(':') ? destination.slice(0, destination.lastIndexOf(':')) : destination;
        lines.push(`INFO[0031] Pushing image to ${destination}`, `INFO[0034] Pushed ${repository}@${digest}`);
      }
    }
    // The busybox epilogue: printf '<prefix>%s\n' "$(cat <digest file>)" after a successful kaniko.
    const epilogue = script === null ? null : /printf '([^'%]*)%s\\n' "\$\(cat ([^)\s]+)\)"/.exec(script);
    if (exitCode === 0 && epilogue !== null && epilogue[2] === flags.get('digest-file')) lines.push(`${epilogue[1] ?? ''}${digest}`);
    return { output: lines, exitCode, digest: exitCode === 0 ? digest : null, destination };
  }

  /** The `auth` kaniko would find for the destination's registry in /kaniko/.docker/config.json. */
  private dockerAuth(group: Group, destination: string): string | undefined {
    const container = group.body.properties.containers[0];
    const mount = container?.properties.volumeMounts?.find((candidate) => candidate.mountPath === '/kaniko/.docker');
    const volume = group.body.properties.volumes?.find((candidate) => candidate.name === mount?.name);
    const encoded = volume?.secret?.['config.json'];
    if (encoded === undefined) return undefined;
    try {
      const config = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8')) as { auths?: Record<string, { auth?: string }> };
      return config.auths?.[destination.slice(0, destination.indexOf('/'))]?.auth;
    } catch {
      return undefined;
    }
  }

  /** The group as ARM returns it: secure values and secret volume contents left out. */
  private view(group: Group): unknown {
    const now = new Date().toISOString();
    const { properties } = group.body;
    const containers = properties.containers.map((container, index) => ({
      name: container.name,
      properties: {
        ...container.properties,
        environmentVariables: container.properties.environmentVariables?.map((variable) =>
          variable.secureValue === undefined ? variable : { name: variable.name },
        ),
        instanceView: index === 0 ? this.containerView(group, now) : { restartCount: 0, events: [] },
      },
    }));
    const volumes = properties.volumes?.map((volume) => (volume.secret === undefined ? volume : { name: volume.name, secret: {} }));
    const groupState = group.state === 'Terminated' ? (group.run.exitCode === 0 ? 'Succeeded' : 'Failed') : group.state === 'Running' ? 'Running' : 'Pending';
    const view = {
      id: `/subscriptions/${this.context.subscriptionId}/resourceGroups/${group.resourceGroup}/providers/Microsoft.ContainerInstance/containerGroups/${group.name}`,
      name: group.name,
      type: 'Microsoft.ContainerInstance/containerGroups',
      location: group.body.location,
      tags: group.body.tags,
      properties: {
        ...properties,
        containers,
        ...(volumes === undefined ? {} : { volumes }),
        provisioningState: group.provisioningState,
        instanceView: { events: [], state: groupState },
      },
    };
    // The simulator holds itself to the spec it enforces on requests.
    const problems = this.validator.validate('ContainerGroup', view);
    if (problems.length > 0) throw new Error(`simulator bug: its container group view breaks the spec: ${problems.join('; ')}`);
    return view;
  }

  private containerView(group: Group, now: string): unknown {
    const image = group.body.properties.containers[0]?.properties.image ?? '';
    if (group.scenario.kanikoImagePull === 'backoff' && group.ticks > 0) {
      return {
        restartCount: 0,
        currentState: { state: 'Waiting', detailStatus: 'ErrImagePull' },
        events: [
          { count: group.ticks, firstTimestamp: now, lastTimestamp: now, name: 'Pulling', message: `pulling image "${image}"`, type: 'Normal' },
          {
            count: group.ticks,
            firstTimestamp: now,
            lastTimestamp: now,
            name: 'Failed',
            message: `Failed to pull image "${image}": rpc error: code = Unknown desc = failed to resolve reference "${image}": not found`,
            type: 'Warning',
          },
        ],
      };
    }
    const events = group.state === 'Waiting' ? [{ count: 1, firstTimestamp: now, lastTimestamp: now, name: 'Pulling', message: `pulling image "${image}"`, type: 'Normal' }] : [];
    if (group.state === 'Waiting') return { restartCount: 0, currentState: { state: 'Waiting', detailStatus: 'ContainerCreating' }, events };
    if (group.state === 'Running') return { restartCount: 0, currentState: { state: 'Running', startTime: group.startTime ?? now, detailStatus: '' }, events };
    return {
      restartCount: 0,
      currentState: {
        state: 'Terminated',
        startTime: group.startTime ?? now,
        finishTime: group.finishTime ?? now,
        exitCode: group.run.exitCode,
        detailStatus: group.run.exitCode === 0 ? 'Completed' : 'Error',
      },
      events,
    };
  }
}

/** What ARM checks beyond the schema, for the properties the builder uses. */
function checkSemantics(body: WireContainerGroup, name: string, location: string): void {
  if (body.location === undefined) throw new ArmHttpError(400, 'LocationRequired', 'The location property is required for this definition.');
  if (body.location.toLowerCase() !== location.toLowerCase()) {
    throw new ArmHttpError(400, 'NoRegisteredProviderFound', `The simulator serves location '${location}', not '${body.location}'.`);
  }
  const { containers, volumes = [] } = body.properties;
  if (containers.length === 0) throw new ArmHttpError(400, 'ContainerGroupContainersEmpty', `The container group '${name}' has no containers.`);
  const names = new Set<string>();
  for (const container of containers) {
    if (names.has(container.name)) throw new ArmHttpError(400, 'DuplicateContainerName', `Duplicate container name '${container.name}'.`);
    names.add(container.name);
    const { cpu, memoryInGB } = container.properties.resources.requests;
    if (cpu <= 0 || cpu > 4 || memoryInGB <= 0 || memoryInGB > 16) {
      throw new ArmHttpError(400, 'InvalidContainerResources', `The resource requests of container '${container.name}' (cpu ${cpu}, memory ${memoryInGB} GB) are out of range.`);
    }
    for (const variable of container.properties.environmentVariables ?? []) {
      if (variable.value !== undefined && variable.secureValue !== undefined) {
        throw new ArmHttpError(400, 'InvalidEnvironmentVariable', `The environment variable '${variable.name}' has both value and secureValue.`);
      }
    }
    for (const mount of container.properties.volumeMounts ?? []) {
      if (!volumes.some((volume) => volume.name === mount.name)) {
        throw new ArmHttpError(400, 'VolumeMountNotFound', `The volume mount '${mount.name}' of container '${container.name}' does not match a volume.`);
      }
    }
  }
  for (const volume of volumes) {
    for (const [file, value] of Object.entries(volume.secret ?? {})) {
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value)) throw new ArmHttpError(400, 'InvalidSecretVolume', `The secret '${file}' of volume '${volume.name}' is not base64.`);
    }
  }
}

function defaultKanikoLog(context: string, cacheRepo: string | null): string[] {
  return [
    `INFO[0000] Using dockerignore file: /kaniko/buildcontext/.dockerignore`,
    `INFO[0000] Retrieving image manifest node:24-slim`,
    `INFO[0000] Retrieving image node:24-slim from registry index.docker.io`,
    `INFO[0001] Built cross stage deps: map[]`,
    `INFO[0001] Downloading source context from ${context.replace(/\?.*$/, '')}`,
    `INFO[0002] Executing 0 build triggers`,
    `INFO[0002] Checking for cached layer ${cacheRepo ?? 'cache'}:4f1d9c...`,
    `INFO[0002] No cached layer found for cmd RUN npm ci`,
    `INFO[0003] Unpacking rootfs as cmd COPY . . requires it.`,
    `INFO[0012] RUN npm ci`,
    `added 42 packages, and audited 43 packages in 3s`,
    `INFO[0018] Taking snapshot of full filesystem...`,
    `INFO[0025] Pushing layer ${cacheRepo ?? 'cache'}:4f1d9c... to cache now`,
  ];
}
