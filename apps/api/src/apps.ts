import type {
  ApiAdapters,
  AppEnvVariable,
  AppJobMessage,
  AppRecord,
  AppRef,
  AppStatus,
  Clock,
  DeploymentCreator,
  DeploymentKind,
  DeploymentRecord,
  Environment,
  EnvScope,
  FieldError,
  Logger,
  OutboxEvent,
} from '@zepid/core';
import {
  appName,
  createDeliveries,
  decodeSourceManifest,
  DeployError,
  ENVIRONMENTS,
  envValueProblems,
  isTerminal,
  LIMITS,
  newDeploymentId,
  newDeploymentRecord,
  newPrefixedId,
  projectKey,
  quotaExceeded,
  sha256Hex,
} from '@zepid/core';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DeploymentService } from './deployments.ts';

/**
 * App operations (issue 12): the apps list, rollback, an app's env variables and app deletion. Like
 * DeploymentService it only records and queues: rollback and config deployments run on the worker
 * (without building), and so does the delete-app job. Env values go through the secrets port only;
 * nothing here logs or returns them.
 */

/** Prefixes of names that frameworks inline into the client bundle at build time: `build` scope by default. */
export const BUILD_ENV_PREFIXES = ['VITE_', 'NEXT_PUBLIC_', 'PUBLIC_', 'NUXT_PUBLIC_', 'REACT_APP_', 'GATSBY_'] as const;

export function defaultScopeOf(name: string): EnvScope {
  return BUILD_ENV_PREFIXES.some((prefix) => name.startsWith(prefix)) ? 'build' : 'runtime';
}

/**
 * How env changes of one app are ordered across API replicas: a lease on the app record (`envLock`),
 * taken and given back by conditional writes (SQLite: the etag column; Cosmos DB: If-Match).
 */
export const ENV_LEASE = {
  /** A lease its holder never gave back (the replica died) is free again after this long. */
  leaseMs: 60_000,
  /** How long a change waits for another change's lease before answering 409 CONFLICT (retry). */
  waitMs: 15_000,
  /**
   * A change that has held the lease this long before it writes anything gives up (503, nothing
   * written), so the rest of the lease covers its writes: a Key Vault set of 100 values with purges
   * to wait out takes seconds, not 40.
   */
  writeWithinMs: 20_000,
} as const;

interface EnvLease {
  owner: string;
  /** performance.now() when taken. */
  takenAt: number;
}

export type ApplyMode = 'restart' | 'none';
export type RollbackEnv = 'current' | 'snapshot';

export interface AppView {
  appName: string;
  projectId: string;
  environment: Environment;
  url: string | null;
  status: AppStatus;
  liveDeploymentId: string | null;
  updatedAt: string;
}

export interface EnvVariableView extends AppEnvVariable {
  /** The live deployment runs with this variable's current value. */
  appliedToLive: boolean;
}

export interface EnvChangeAnswer {
  projectId: string;
  appName: string;
  environment: Environment;
  variables: AppEnvVariable[];
  deploymentId: string | null;
  kind: DeploymentKind | null;
  rebuild: boolean;
  message: string;
}

/** The deployment whose build step made the image `record` runs (itself when it built its own). */
export function imageBuilderOf(record: DeploymentRecord): string {
  const reused = record.steps.build.output.reusedFrom;
  return record.imageOf ?? (typeof reused === 'string' ? reused : record.id);
}

/**
 * Whether `record` can be rolled back to: it completed with an image, and the deployment that built
 * that image has no `imageRemovedAt` (the worker's image retention writes it when it deletes the image).
 * `builder`: that deployment's record; undefined when not looked up or gone (retention removed the
 * record, which does not remove images): then only the worker can tell, when the rollback runs.
 */
export function canRollback(record: DeploymentRecord, builder?: DeploymentRecord | null): boolean {
  if (record.status !== 'completed' || record.result.image === null) return false;
  const source = imageBuilderOf(record) === record.id ? record : builder;
  return source === undefined || source === null || source.steps.build.output.imageRemovedAt === undefined;
}

/** Loads the image builders of `records` that are other deployments, for canRollback. */
export async function buildersOf(adapters: ApiAdapters, orgId: string, records: readonly DeploymentRecord[]): Promise<Map<string, DeploymentRecord | null>> {
  const known = new Map(records.map((record) => [record.id, record]));
  const builders = new Map<string, DeploymentRecord | null>();
  for (const record of records) {
    if (record.status !== 'completed') continue;
    const id = imageBuilderOf(record);
    if (id === record.id || builders.has(id)) continue;
    builders.set(id, known.get(id) ?? (await adapters.store.get({ orgId, deploymentId: id })));
  }
  return builders;
}

export interface AppServiceOptions {
  clock: Clock;
  logger: Logger;
}

export class AppService {
  private readonly adapters: ApiAdapters;
  private readonly deployments: DeploymentService;
  private readonly options: AppServiceOptions;
  /**
   * Env changes of one app are made one at a time: each reads the current values, edits them and
   * writes them back. Within this process they queue here; across replicas each takes the app
   * record's lease (`envLock`, ENV_LEASE) for its read-edit-write.
   */
  private readonly envLocks = new Map<string, Promise<unknown>>();

  constructor(adapters: ApiAdapters, deployments: DeploymentService, options: AppServiceOptions) {
    this.adapters = adapters;
    this.deployments = deployments;
    this.options = options;
  }

  /**
   * Webhook `app.env_changed` for an env change that started no deployment (status `stored`; a restart
   * announces itself when its config deployment completes). Names and values stay out of it. The
   * values are stored already: a failure to create the deliveries is logged, not answered.
   */
  private async announceStoredEnv(ref: AppRef): Promise<void> {
    const now = this.options.clock();
    try {
      const live = await this.adapters.store.latestCompleted(ref.orgId, ref.appName);
      const event: OutboxEvent = {
        id: newPrefixedId('evt_'),
        type: 'app.env_changed',
        timestamp: now.toISOString(),
        data: { deploymentId: null, projectId: ref.projectId, environment: ref.environment, appName: ref.appName, status: 'stored', url: live?.result.url ?? null, error: null },
      };
      await createDeliveries(this.adapters.webhooks, await this.adapters.webhooks.listWebhooks(ref.orgId), ref, event, now);
    } catch (error) {
      this.options.logger.warn({ err: error, appName: ref.appName }, 'app.env_changed not announced to webhooks');
    }
  }

  ref(orgId: string, projectId: string, environment: Environment): AppRef {
    return { orgId, projectId, environment, appName: appName(orgId, projectId, environment) };
  }

  /** The app named `name` in the org (seed 004's `uuid`), from its record or its newest deployment; 404 when neither. */
  async find(orgId: string, name: string): Promise<AppRef> {
    const record = await this.adapters.store.getApp(orgId, name);
    if (record !== null) return { orgId, projectId: record.projectId, environment: record.environment, appName: record.appName };
    const newest = (await this.adapters.store.listByApp(orgId, name, { limit: 1, cursor: null })).items[0];
    if (newest === undefined) throw new DeployError('NOT_FOUND', `App ${name} not found`);
    return { orgId, projectId: newest.projectId, environment: newest.environment, appName: newest.appName };
  }

  /** 409 CONFLICT when the app is being deleted: nothing new may start for it. Returns its record (null when none). */
  async assertNotDeleting(orgId: string, name: string): Promise<AppRecord | null> {
    const record = await this.adapters.store.getApp(orgId, name);
    if (record?.deletingSince != null) {
      throw new DeployError('CONFLICT', `App ${name} is being deleted (since ${record.deletingSince}); nothing new can start for it`, {
        details: { appName: name, deletingSince: record.deletingSince },
      });
    }
    return record;
  }

  /** Reads, edits and conditionally writes the app record (created when absent); `edit` returning null writes nothing. */
  async updateRecord(ref: AppRef, edit: (current: AppRecord) => AppRecord | null): Promise<AppRecord> {
    for (let tries = 0; ; tries += 1) {
      const now = this.options.clock().toISOString();
      const current = (await this.adapters.store.getApp(ref.orgId, ref.appName)) ?? {
        ...ref,
        env: [],
        envUpdatedAt: null,
        deletingSince: null,
        createdAt: now,
        updatedAt: now,
        etag: '',
      };
      const next = edit(current);
      if (next === null) return current;
      try {
        return await this.adapters.store.putApp({ ...next, updatedAt: now });
      } catch (error) {
        const lost = error instanceof DeployError && (error.code === 'CONCURRENT_UPDATE' || error.code === 'CONFLICT');
        if (!lost || tries >= 10) throw error;
      }
    }
  }

  /**
   * The app's current env values: its stored set once one was written (an env change or a POST /deploy
   * with envVariables); before that (apps deployed before issue 12), those its live deployment runs with.
   */
  async currentEnv(ref: AppRef, record?: AppRecord | null): Promise<Record<string, string>> {
    const { store, secrets } = this.adapters;
    const app = record === undefined ? await store.getApp(ref.orgId, ref.appName) : record;
    // Every POST /deploy without envVariables comes here: the secrets are read only when there are
    // values to read, and the live deployment's names without parsing its whole record where the
    // store can (BENCHMARKS.md, POST /deploy).
    if (app !== null && app.envUpdatedAt !== null) return app.env.length === 0 ? {} : secrets.getAppEnv(ref);
    const live =
      store.latestCompletedEnvNames === undefined
        ? await store.latestCompleted(ref.orgId, ref.appName).then((found) => found && { deploymentId: found.id, envVariableNames: found.spec.envVariableNames })
        : await store.latestCompletedEnvNames(ref.orgId, ref.appName);
    return live === null || live.envVariableNames.length === 0 ? {} : secrets.get(live.deploymentId);
  }

  /** The app's variables (names, scopes, when set); from its live deployment before any was stored. */
  private async variablesOf(ref: AppRef, record: AppRecord | null, live: DeploymentRecord | null): Promise<AppEnvVariable[]> {
    if (record !== null && record.envUpdatedAt !== null) return record.env;
    if (live === null) return [];
    return live.spec.envVariableNames.map((name) => ({ name, scope: defaultScopeOf(name), updatedAt: live.createdAt }));
  }

  /**
   * After a POST /deploy that sent envVariables: they become the app's current env. A name keeps the
   * scope it had unless `buildEnv` lists it; new names get the default scope of their prefix.
   */
  async adoptDeployedEnv(ref: AppRef, values: Record<string, string>, buildEnv: readonly string[], deployment: DeploymentRecord): Promise<void> {
    const unchangedIn = async (stored: AppRecord | null): Promise<{ unchanged: boolean; before: Record<string, string> }> => {
      const before = await this.currentEnv(ref, stored);
      const names = Object.keys(values);
      const unchanged =
        stored !== null &&
        stored.envUpdatedAt !== null &&
        names.length === Object.keys(before).length &&
        names.every((name) => {
          const variable = stored.env.find((known) => known.name === name);
          return before[name] === values[name] && variable !== undefined && (!buildEnv.includes(name) || variable.scope === 'build');
        });
      return { unchanged, before };
    };
    // A redeploy with the same values (the usual case) writes nothing more, and takes no lease.
    if ((await unchangedIn(await this.adapters.store.getApp(ref.orgId, ref.appName))).unchanged) return;
    await this.withEnvLock(ref, async (lease) => {
      // Again under the lease: another replica may have changed them meanwhile.
      const { unchanged, before } = await unchangedIn(await this.adapters.store.getApp(ref.orgId, ref.appName));
      if (unchanged) return;
      this.assertLeaseFresh(ref, lease);
      await this.updateRecord(ref, this.fenced(lease, (current) => {
        // As of the deployment that runs with them: it is the first to have the new values.
        const now = deployment.createdAt;
        const old = new Map(current.env.map((variable) => [variable.name, variable]));
        const env = Object.keys(values)
          .sort()
          .map((name): AppEnvVariable => {
            const previous = old.get(name);
            const scope: EnvScope = buildEnv.includes(name) ? 'build' : (previous?.scope ?? defaultScopeOf(name));
            return { name, scope, updatedAt: previous !== undefined && before[name] === values[name] ? previous.updatedAt : now };
          });
        return { ...current, env, envUpdatedAt: now };
      }));
      await this.adapters.secrets.putAppEnv(ref, values);
    });
  }

  /** Runs `fn` holding the app's env lease: after this process's earlier changes of the app, and any other replica's. */
  private async withEnvLock<T>(ref: AppRef, fn: (lease: EnvLease) => Promise<T>): Promise<T> {
    const key = `${ref.orgId}\u0000${ref.appName}`;
    const previous = this.envLocks.get(key) ?? Promise.resolve();
    const leased = async () => {
      const lease = await this.takeEnvLease(ref);
      try {
        return await fn(lease);
      } finally {
        await this.giveBackEnvLease(ref, lease);
      }
    };
    const run = previous.then(leased, leased);
    const settled = run.catch(() => undefined);
    this.envLocks.set(key, settled);
    try {
      return await run;
    } finally {
      if (this.envLocks.get(key) === settled) this.envLocks.delete(key);
    }
  }

  /** Takes the app record's `envLock` (creating the record when absent) by a conditional write; waits up to ENV_LEASE.waitMs for another holder. */
  private async takeEnvLease(ref: AppRef): Promise<EnvLease> {
    const { store } = this.adapters;
    const owner = newPrefixedId('lease_');
    const started = performance.now();
    for (;;) {
      const now = this.options.clock();
      const current = await store.getApp(ref.orgId, ref.appName);
      const held = current?.envLock;
      if (held != null && Date.parse(held.until) > now.getTime()) {
        if (performance.now() - started > ENV_LEASE.waitMs) {
          throw new DeployError('CONFLICT', `Another change of ${ref.appName}'s env variables has been in progress for over ${ENV_LEASE.waitMs / 1000} s; retry shortly`, {
            retryable: true,
            details: { appName: ref.appName },
          });
        }
        await sleep(10 + Math.random() * 40);
        continue;
      }
      const base: AppRecord = current ?? { ...ref, env: [], envUpdatedAt: null, deletingSince: null, createdAt: now.toISOString(), updatedAt: now.toISOString(), etag: '' };
      try {
        await store.putApp({ ...base, envLock: { owner, until: new Date(now.getTime() + ENV_LEASE.leaseMs).toISOString() }, updatedAt: now.toISOString() });
        return { owner, takenAt: performance.now() };
      } catch (error) {
        // Another replica took it (or wrote the record) between the read and the write: look again.
        if (!(error instanceof DeployError && (error.code === 'CONCURRENT_UPDATE' || error.code === 'CONFLICT'))) throw error;
      }
    }
  }

  /** Clears `envLock` if this change still holds it. Never throws: a lease not given back is free after ENV_LEASE.leaseMs. */
  private async giveBackEnvLease(ref: AppRef, lease: EnvLease): Promise<void> {
    const { store } = this.adapters;
    try {
      for (let tries = 0; tries < 10; tries += 1) {
        const current = await store.getApp(ref.orgId, ref.appName);
        if (current?.envLock?.owner !== lease.owner) {
          if (current !== null) this.options.logger.warn({ appName: ref.appName }, 'env lease was taken over before it was given back (a change took longer than ENV_LEASE.leaseMs)');
          return;
        }
        try {
          await store.putApp({ ...current, envLock: null });
          return;
        } catch (error) {
          if (!(error instanceof DeployError && error.code === 'CONCURRENT_UPDATE')) throw error;
        }
      }
    } catch (error) {
      this.options.logger.warn({ err: error, appName: ref.appName }, `env lease not given back; free again in ${ENV_LEASE.leaseMs / 1000} s`);
    }
  }

  /** 503 (nothing written yet) when the lease has been held so long that the writes could outlast it. */
  private assertLeaseFresh(ref: AppRef, lease: EnvLease): void {
    if (performance.now() - lease.takenAt > ENV_LEASE.writeWithinMs) {
      throw new DeployError('DEPENDENCY_UNAVAILABLE', `Reading ${ref.appName}'s env variables took over ${ENV_LEASE.writeWithinMs / 1000} s; nothing was changed: retry`, { retryable: true });
    }
  }

  /** An app record edit that refuses (CONCURRENT_UPDATE, nothing written) when this change no longer holds the lease. */
  private fenced(lease: EnvLease, edit: (current: AppRecord) => AppRecord | null): (current: AppRecord) => AppRecord | null {
    return (current) => {
      if (current.envLock?.owner !== lease.owner) {
        throw new DeployError('CONCURRENT_UPDATE', `The env lease of ${current.appName} was taken over; nothing was changed: retry`, { retryable: true });
      }
      return edit(current);
    };
  }

  async view(ref: AppRef): Promise<AppView> {
    return (await this.viewIfExists(ref)) ?? this.missingView(ref);
  }

  /** The app's view; null when it does not exist (no record, no deployment: never deployed, or deleted). */
  async viewIfExists(ref: AppRef): Promise<AppView | null> {
    const { store } = this.adapters;
    const [record, newest, live] = await Promise.all([
      store.getApp(ref.orgId, ref.appName),
      store.listByApp(ref.orgId, ref.appName, { limit: 1, cursor: null }).then((page) => page.items[0] ?? null),
      store.latestCompleted(ref.orgId, ref.appName),
    ]);
    if (record === null && newest === null) return null;
    let status: AppStatus;
    if (record?.deletingSince != null) status = 'deleting';
    else if (newest !== null && !isTerminal(newest.status)) status = 'deploying';
    else if (live !== null) status = 'live';
    else status = 'failed';
    const times = [record?.updatedAt, newest?.updatedAt].filter((time): time is string => time !== undefined).sort();
    return {
      appName: ref.appName,
      projectId: ref.projectId,
      environment: ref.environment,
      url: live?.result.url ?? null,
      status,
      liveDeploymentId: live?.id ?? null,
      updatedAt: times.at(-1) ?? this.options.clock().toISOString(),
    };
  }

  private missingView(ref: AppRef): AppView {
    return { appName: ref.appName, projectId: ref.projectId, environment: ref.environment, url: null, status: 'failed', liveDeploymentId: null, updatedAt: this.options.clock().toISOString() };
  }

  async list(orgId: string, page: { limit: number; cursor: string | null }): Promise<{ apps: AppView[]; nextCursor: string | null }> {
    const refs = await this.adapters.store.listApps(orgId, page);
    const apps: AppView[] = [];
    for (const ref of refs.items) apps.push(await this.view(ref));
    return { apps, nextCursor: refs.nextCursor };
  }

  // ---- rollback -------------------------------------------------------------------------------

  async rollback(
    orgId: string,
    targetId: string,
    env: RollbackEnv,
    idempotency: { key: string; body: unknown } | null,
    traceparent: string | null,
    createdBy: DeploymentCreator | null = null,
  ): Promise<{ record: DeploymentRecord; replayed: boolean }> {
    const { store, secrets, artifacts } = this.adapters;
    const target = await store.get({ orgId, deploymentId: targetId });
    if (target === null) throw new DeployError('NOT_FOUND', `Deployment ${targetId} not found`);
    const replay = await this.deployments.replayOf(orgId, idempotency);
    if (replay !== null) return { record: replay, replayed: true };
    if (target.status !== 'completed') {
      throw new DeployError('INVALID_STATE', `Deployment ${targetId} is ${target.status}; only a completed deployment can be rolled back to`, {
        details: { status: target.status },
      });
    }
    if (target.result.image === null) {
      throw new DeployError('INVALID_STATE', `Deployment ${targetId} recorded no image; there is nothing to put back live`, { details: { status: target.status } });
    }
    const builderId = imageBuilderOf(target);
    const builder = builderId === target.id ? target : await store.get({ orgId, deploymentId: builderId });
    if (!canRollback(target, builder)) {
      throw new DeployError(
        'INVALID_STATE',
        `The image of deployment ${targetId} (built by ${builderId}) was removed at ${String(builder?.steps.build.output.imageRemovedAt)} by image retention; deploy again instead`,
        { details: { status: target.status, imageOf: builderId } },
      );
    }
    await this.assertNotDeleting(orgId, target.appName);
    const ref = this.ref(orgId, target.projectId, target.environment);
    const values = env === 'snapshot' ? await secrets.get(target.id) : await this.currentEnv(ref);
    const id = newDeploymentId();
    const record: DeploymentRecord = {
      ...this.derivedRecord(id, target, values, idempotency, createdBy),
      kind: 'rollback',
      rollbackOf: target.id,
      imageOf: builderId,
    };
    const manifest = await artifacts.getSource({ orgId, deploymentId: target.id });
    return { record: await this.deployments.submitRecord(record, values, manifest, traceparent), replayed: false };
  }

  /**
   * POST /deploy/:id/redeploy: a new `build` of deployment `targetId`'s stored source (its files as
   * stored, its build settings), with the app's current env values. It builds: an earlier build's
   * image is never reused for it (the worker's validate step reads `redeployOf`), though package
   * caches are. 404 for an unknown (or another org's) deployment; 409 CONFLICT while the app is being
   * deleted; 409 INVALID_STATE when the source is no longer stored (retention removed it).
   */
  async redeploy(
    orgId: string,
    targetId: string,
    idempotency: { key: string; body: unknown } | null,
    traceparent: string | null,
    createdBy: DeploymentCreator | null,
  ): Promise<{ record: DeploymentRecord; replayed: boolean }> {
    const { store, artifacts } = this.adapters;
    const target = await store.get({ orgId, deploymentId: targetId });
    if (target === null) throw new DeployError('NOT_FOUND', `Deployment ${targetId} not found`);
    const replay = await this.deployments.replayOf(orgId, idempotency);
    if (replay !== null) return { record: replay, replayed: true };
    await this.assertNotDeleting(orgId, target.appName);
    const manifest = await artifacts.getSource({ orgId, deploymentId: target.id });
    if (manifest === null) {
      throw new DeployError('INVALID_STATE', `The source of deployment ${targetId} is no longer stored (retention removed it); deploy the files again instead`, {
        details: { reason: 'source_removed', deploymentId: targetId, status: target.status },
      });
    }
    // Objects a stored manifest names are kept by the sweep; looking them up also marks them used now.
    const files = decodeSourceManifest(manifest).files;
    const found = await artifacts.findObjects(orgId, [...new Set(files.map((file) => file.sha256))]);
    const missing = files.filter((file) => !found.has(file.sha256));
    if (missing.length > 0) {
      throw new DeployError('INVALID_STATE', `${missing.length} of the ${files.length} source files of deployment ${targetId} are no longer stored; deploy the files again instead`, {
        details: { reason: 'source_removed', deploymentId: targetId, status: target.status, missingFiles: missing.length },
      });
    }
    const values = await this.currentEnv(this.ref(orgId, target.projectId, target.environment));
    const record: DeploymentRecord = {
      ...this.derivedRecord(newDeploymentId(), target, values, idempotency, createdBy),
      kind: 'build',
      rollbackOf: null,
      imageOf: null,
      redeployOf: target.id,
    };
    return { record: await this.deployments.submitRecord(record, values, manifest, traceparent), replayed: false };
  }

  /** A new queued record of the same app, spec and source as `from`, running with `values`' names. */
  private derivedRecord(
    id: string,
    from: DeploymentRecord,
    values: Record<string, string>,
    idempotency: { key: string; body: unknown } | null,
    createdBy: DeploymentCreator | null = null,
  ): DeploymentRecord {
    return newDeploymentRecord(
      {
        id,
        orgId: from.orgId,
        projectId: from.projectId,
        userId: from.userId,
        projectName: from.projectName,
        environment: from.environment,
        appName: from.appName,
        spec: { ...from.spec, envVariableNames: Object.keys(values).sort() },
        source: { ...from.source, storedFiles: 0, storedBytes: 0 },
        idempotency: idempotency === null ? null : { key: idempotency.key, requestHash: sha256Hex(JSON.stringify(idempotency.body)) },
        createdBy,
      },
      this.options.clock(),
    );
  }

  // ---- env variables --------------------------------------------------------------------------

  async getEnv(ref: AppRef): Promise<{ variables: EnvVariableView[]; envUpdatedAt: string | null; liveDeploymentId: string | null }> {
    const [record, live] = await Promise.all([this.adapters.store.getApp(ref.orgId, ref.appName), this.adapters.store.latestCompleted(ref.orgId, ref.appName)]);
    const variables = await this.variablesOf(ref, record, live);
    return {
      variables: variables.map((variable) => ({
        ...variable,
        appliedToLive: live !== null && live.spec.envVariableNames.includes(variable.name) && variable.updatedAt <= live.createdAt,
      })),
      envUpdatedAt: record?.envUpdatedAt ?? null,
      liveDeploymentId: live?.id ?? null,
    };
  }

  /**
   * One env change: `set` maps names to new values (null removes one); `replace` makes the set exactly
   * the non-null ones. Then, with `apply: 'restart'`, the live app takes the new values: a `config`
   * deployment (same image, new revision) when only runtime-scoped variables changed, a `build` of the
   * live source when a build-scoped one did.
   */
  async changeEnv(
    ref: AppRef,
    change: { set: Record<string, string | null>; replace: boolean; scopes: Record<string, EnvScope> },
    apply: ApplyMode,
    traceparent: string | null,
    createdBy: DeploymentCreator | null = null,
  ): Promise<EnvChangeAnswer> {
    const problems: FieldError[] = [];
    for (const [name, value] of Object.entries(change.set)) if (value !== null) problems.push(...envValueProblems(name, value, `set/${name}`));
    for (const name of Object.keys(change.scopes)) {
      if (!(name in change.set)) problems.push({ field: `scope/${name}`, message: `names ${name}, which this change does not set` });
    }
    if (problems.length > 0) {
      throw new DeployError('VALIDATION_ERROR', `Invalid body: ${problems.map((problem) => problem.field).slice(0, 5).join(', ')}`, { details: problems });
    }
    await this.assertNotDeleting(ref.orgId, ref.appName);
    if (apply === 'restart' && (await this.adapters.store.latestCompleted(ref.orgId, ref.appName)) !== null) {
      // The restart would be refused at the org's active limit: refuse before storing anything, so a 429 changed nothing.
      const active = await this.adapters.store.countActive(ref.orgId);
      if (active >= this.deployments.maxActivePerOrg) throw quotaExceeded(active, this.deployments.maxActivePerOrg);
    }
    const { record, changed, buildChanged } = await this.withEnvLock(ref, async (lease) => {
      const before = await this.currentEnv(ref);
      const after: Record<string, string> = change.replace ? {} : { ...before };
      for (const [name, value] of Object.entries(change.set)) {
        if (value === null) delete after[name];
        else after[name] = value;
      }
      const count = Object.keys(after).length;
      if (count > LIMITS.envVariables) {
        throw new DeployError('VALIDATION_ERROR', `An app has at most ${LIMITS.envVariables} env variables; this change leaves ${count}`, {
          details: [{ field: 'set', message: `would leave ${count} variables, more than ${LIMITS.envVariables}` }],
        });
      }
      const names = new Set([...Object.keys(before), ...Object.keys(after)]);
      const changedNames = [...names].filter((name) => before[name] !== after[name]).sort();
      let buildChangedNames: string[] = [];
      this.assertLeaseFresh(ref, lease);
      const stored = await this.updateRecord(ref, this.fenced(lease, (current) => {
        const now = this.options.clock().toISOString();
        const known = new Map(
          (current.envUpdatedAt === null ? Object.keys(before).map((name) => ({ name, scope: defaultScopeOf(name), updatedAt: now })) : current.env).map(
            (variable) => [variable.name, variable],
          ),
        );
        const scopeChanged = Object.entries(change.scopes).filter(([name, scope]) => known.get(name)?.scope !== scope && name in after).map(([name]) => name);
        if (changedNames.length === 0 && scopeChanged.length === 0 && current.envUpdatedAt !== null) return null;
        const env = Object.keys(after)
          .sort()
          .map((name): AppEnvVariable => {
            const previous = known.get(name);
            const scope = change.scopes[name] ?? previous?.scope ?? defaultScopeOf(name);
            return { name, scope, updatedAt: changedNames.includes(name) || previous === undefined ? now : previous.updatedAt };
          });
        // A build-scoped variable changed (by value, or by becoming/ceasing to be build-scoped): the image must be rebuilt.
        buildChangedNames = changedNames.filter((name) => known.get(name)?.scope === 'build' || env.find((variable) => variable.name === name)?.scope === 'build');
        return { ...current, env, envUpdatedAt: now };
      }));
      await this.adapters.secrets.putAppEnv(ref, after);
      return { record: stored, changed: changedNames, buildChanged: buildChangedNames };
    });

    const base = { projectId: ref.projectId, appName: ref.appName, environment: ref.environment, variables: record.env };
    const what = changed.length === 0 ? 'nothing changed' : `changed ${changed.join(', ')}`;
    if (changed.length === 0 || apply === 'none') {
      const later = changed.length === 0 ? '' : '; the app runs with them from its next deployment (apply: "restart" restarts it now)';
      if (changed.length > 0) await this.announceStoredEnv(ref);
      return { ...base, deploymentId: null, kind: null, rebuild: false, message: `Env variables stored (${what})${later}` };
    }
    const live = await this.adapters.store.latestCompleted(ref.orgId, ref.appName);
    if (live === null) {
      await this.announceStoredEnv(ref);
      return { ...base, deploymentId: null, kind: null, rebuild: false, message: `Env variables stored (${what}); the app has no live deployment, so nothing restarted: its next deployment uses them` };
    }
    const values = await this.adapters.secrets.getAppEnv(ref);
    const manifest = await this.adapters.artifacts.getSource({ orgId: ref.orgId, deploymentId: live.id });
    const id = newDeploymentId();
    if (buildChanged.length > 0) {
      // A build reads these: the live image has the old values inlined; build the live source again.
      if (manifest === null) {
        throw new DeployError('INVALID_STATE', `${buildChanged.join(', ')} ${buildChanged.length === 1 ? 'is' : 'are'} build-scoped, and the source of the live deployment ${live.id} is no longer stored to build again; the values are stored: deploy the source again`);
      }
      const rebuild = await this.deployments.submitRecord({ ...this.derivedRecord(id, live, values, null, createdBy), kind: 'build', rollbackOf: null, imageOf: null }, values, manifest, traceparent);
      return {
        ...base,
        deploymentId: rebuild.id,
        kind: 'build',
        rebuild: true,
        message: `Env variables stored (${what}); ${buildChanged.join(', ')} ${buildChanged.length === 1 ? 'is' : 'are'} build-scoped (read by the build), so the live source is built again in ${rebuild.id}`,
      };
    }
    const config = await this.deployments.submitRecord(
      { ...this.derivedRecord(id, live, values, null, createdBy), kind: 'config', rollbackOf: null, imageOf: imageBuilderOf(live) },
      values,
      manifest,
      traceparent,
    );
    return {
      ...base,
      deploymentId: config.id,
      kind: 'config',
      rebuild: false,
      message: `Env variables stored (${what}); restarting the live image with them in ${config.id}, without building`,
    };
  }

  // ---- deletion -------------------------------------------------------------------------------

  /**
   * DELETE /projects/:projectId: marks the project's apps (one environment or all) deleting, asks
   * their running deployments to cancel, and queues the delete-app job on the project's session.
   * A second call does the same again (harmless: the job is idempotent).
   */
  async deleteProject(orgId: string, projectId: string, environment: Environment | null, traceparent: string | null): Promise<string[]> {
    const { store, queue } = this.adapters;
    const refs: AppRef[] = [];
    for (const env of environment === null ? ENVIRONMENTS : [environment]) {
      const ref = this.ref(orgId, projectId, env);
      const [record, page] = await Promise.all([store.getApp(orgId, ref.appName), store.listByApp(orgId, ref.appName, { limit: 1, cursor: null })]);
      if (record !== null || page.items.length > 0) refs.push(ref);
    }
    if (refs.length === 0) {
      throw new DeployError('NOT_FOUND', `Project ${projectId} has no app${environment === null ? '' : ` in ${environment}`}`);
    }
    const requestedAt = this.options.clock().toISOString();
    for (const ref of refs) {
      await this.updateRecord(ref, (current) => (current.deletingSince !== null ? null : { ...current, deletingSince: requestedAt }));
      let cursor: string | null = null;
      do {
        const page = await store.listByApp(orgId, ref.appName, { limit: LIMITS.pageSize, cursor });
        for (const record of page.items) {
          if (isTerminal(record.status) || record.cancelRequested) continue;
          await this.deployments.cancel(orgId, record.id).catch((error: unknown) => {
            // It finished between the read and the cancel: nothing left to stop.
            if (!(error instanceof DeployError && error.code === 'INVALID_STATE')) throw error;
          });
        }
        cursor = page.nextCursor;
      } while (cursor !== null);
    }
    const message: AppJobMessage = { kind: 'delete-app', orgId, projectId, environment, requestedAt, traceparent };
    const session = projectKey(orgId, projectId);
    await queue.publish(message, { messageId: `delete:${session}:${environment ?? 'all'}:${requestedAt}`, sessionId: session });
    this.options.logger.info({ orgId, projectId, environment, apps: refs.map((ref) => ref.appName) }, 'app deletion queued');
    return refs.map((ref) => ref.appName);
  }
}
