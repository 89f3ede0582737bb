import type { ApiAdapters, Clock, DeployRequest, DeploymentCreator, DeploymentRecord, IntakeSource, Logger, ManifestFile } from '@zepid/core';
import {
  DeployError,
  apply,
  quotaExceeded,
  appName,
  encodeSourceManifest,
  isTerminal,
  jobFor,
  LIMITS,
  mapLimit,
  newDeploymentId,
  newDeploymentRecord,
  OBJECT_RETENTION,
  sha256Hex,
  sourceBytesProblem,
  SourceWindowPassed,
  sourceDigest,
  updateDeployment,
} from '@zepid/core';
import { ObjectLookups } from './object-lookups.ts';

/** An Idempotency-Key with the SHA-256 of its request's body (JSON), hashed once per request. */
export interface KeyedRequest {
  key: string;
  requestHash: string;
}

/** `idempotency` with its body hashed (`keyedRequest({ key, body })`), or as given when it already is. */
export function keyedRequest(idempotency: { key: string; body: unknown } | KeyedRequest): KeyedRequest {
  return 'requestHash' in idempotency ? idempotency : { key: idempotency.key, requestHash: sha256Hex(JSON.stringify(idempotency.body)) };
}

/** Object uploads in flight for one request. */
const OBJECT_WRITES = 8;

export interface DeploymentServiceOptions {
  maxActivePerOrg: number;
  /**
   * OBJECT_UPLOAD_WINDOW_MS (default OBJECT_RETENTION.uploadWindowMs): a POST /deploy that took longer
   * from looking up its objects to storing its manifest looks them up again before it is recorded, as
   * the delete-app job may have deleted one meanwhile (core's removeAppObjects).
   */
  objectUploadWindowMs?: number;
  clock: Clock;
  logger: Logger;
}

/**
 * What the API does with deployments: record and queue them, cancel and retry them. It never builds
 * or deploys: the worker does. Secrets and file objects are stored before the record, the source
 * manifest with it (the intake: locally in the same transaction) or before it, so a record never
 * points at nothing; if recording fails they are removed again (file objects stay for the sweep).
 */
export class DeploymentService {
  private readonly adapters: ApiAdapters;
  private readonly options: DeploymentServiceOptions;
  private readonly lookups: ObjectLookups;

  get maxActivePerOrg(): number {
    return this.options.maxActivePerOrg;
  }

  constructor(adapters: ApiAdapters, options: DeploymentServiceOptions) {
    this.adapters = adapters;
    this.options = options;
    this.lookups = new ObjectLookups(adapters.artifacts, this.uploadWindowMs);
  }

  private get uploadWindowMs(): number {
    return this.options.objectUploadWindowMs ?? OBJECT_RETENTION.uploadWindowMs;
  }

  /**
   * Returns the new (or, for a repeated Idempotency-Key with the same body, the earlier) deployment.
   * `createdBy`: the request's token (id and name), recorded as who started it.
   */
  async submit(
    request: DeployRequest,
    idempotency: { key: string; body: unknown } | KeyedRequest | null,
    traceparent: string | null,
    createdBy: DeploymentCreator | null = null,
    options: { replayChecked?: boolean } = {},
  ): Promise<{ record: DeploymentRecord; replayed: boolean }> {
    const { store, secrets } = this.adapters;
    const keyed = idempotency === null ? null : keyedRequest(idempotency);
    const requestHash = keyed === null ? null : keyed.requestHash;
    // `replayChecked`: the caller has just asked `replayOf` with the same key and hash (POST /deploy
    // does, before the app checks): asking again cost a store read, a JSON.stringify and a SHA-256 of
    // the whole body per keyed POST, as the CLI sends. A request racing in between still ends in the
    // CONFLICT below, answered with the winner.
    if (keyed !== null && options.replayChecked !== true) {
      const earlier = await store.findByIdempotencyKey(request.orgId, keyed.key);
      if (earlier !== null) return { record: this.replay(earlier, keyed.requestHash), replayed: true };
    }

    const id = newDeploymentId();
    const source = await this.storeFiles(request);
    const record = newDeploymentRecord(
      {
        id,
        orgId: request.orgId,
        projectId: request.projectId,
        userId: request.userId,
        projectName: request.projectName,
        environment: request.environment,
        appName: appName(request.orgId, request.projectId, request.environment),
        spec: {
          customDomain: request.customDomain,
          containerSize: request.containerSize,
          envVariableNames: Object.keys(request.envVariables).sort(),
          buildCommand: request.buildCommand,
          startCommand: request.startCommand,
          port: request.port,
          historyMessageCount: request.historyMessages.length,
        },
        source: {
          digest: sourceDigest(source.files),
          fileCount: source.files.length,
          bytes: source.files.reduce((sum, file) => sum + file.size, 0),
          storedFiles: source.storedFiles,
          storedBytes: source.storedBytes,
        },
        idempotency: keyed === null || requestHash === null ? null : { key: keyed.key, requestHash },
        createdBy,
      },
      this.options.clock(),
    );

    const manifest = encodeSourceManifest({ files: source.files, historyMessages: request.historyMessages });
    const storeBy = source.lookedUpAt + this.uploadWindowMs;
    await secrets.put(id, request.envVariables);
    try {
      const created = await this.record(record, traceparent, { manifest, storeBy }, source.files);
      return { record: created, replayed: false };
    } catch (error) {
      await this.discard(request.orgId, id);
      // Two requests with one Idempotency-Key raced: the loser answers with the winner's deployment.
      if (error instanceof DeployError && error.code === 'CONFLICT' && keyed !== null && requestHash !== null) {
        const winner = await store.findByIdempotencyKey(request.orgId, keyed.key);
        if (winner !== null) return { record: this.replay(winner, requestHash), replayed: true };
      }
      throw error;
    }
  }

  /**
   * Stores the contents the org does not have yet, once per distinct content, and returns the manifest
   * entries. One look-up covers every file: it finds the files given by sha256 alone (their sizes count
   * toward the limits) and the sent ones already stored (not uploaded again). Files given by sha256 that
   * the org does not have are a SOURCE_FILES_MISSING listing them all, before anything is written.
   * `lookedUpAt`: when the oldest lookup the answer rests on was made (a found object's lookup is
   * reused for up to a second: ObjectLookups), from which the upload window counts. An org at its
   * active limit is refused (429) before anything is written.
   */
  private async storeFiles(request: DeployRequest): Promise<{ files: ManifestFile[]; storedFiles: number; storedBytes: number; lookedUpAt: number }> {
    const { artifacts } = this.adapters;
    const { found, lookedUpAt } = await this.lookups.lookUp(request.orgId, request.files.map((file) => file.sha256));
    const files = request.files.map((file) => ({ path: file.path, sha256: file.sha256, size: file.data?.length ?? found.get(file.sha256) ?? 0 }));
    const total = files.reduce((sum, file) => sum + file.size, 0);
    if (total > LIMITS.sourceBytes) {
      throw new DeployError('VALIDATION_ERROR', 'Invalid body: files', { details: [{ field: 'files', message: sourceBytesProblem(total) }] });
    }
    const missing = request.files.filter((file) => file.data === null && !found.has(file.sha256));
    if (missing.length > 0) {
      throw new DeployError('SOURCE_FILES_MISSING', `${missing.length} files given by sha256 alone are not stored for this organization; send them with content`, {
        details: { missing: missing.map((file) => ({ path: file.path, sha256: file.sha256 })) },
      });
    }
    const fresh = new Map<string, Buffer>();
    for (const file of request.files) if (file.data !== null && !found.has(file.sha256)) fresh.set(file.sha256, file.data);
    // Anything to write before the intake (file objects, env values for the secret store): refused
    // first when the org is at its active limit, so nothing is written in vain. The usual redeploy
    // writes neither, and the intake's own check (atomic where the store can) is enough.
    if (fresh.size > 0 || Object.keys(request.envVariables).length > 0) await this.assertBelowLimit(request.orgId);
    // The usual redeploy: every file is stored already.
    if (fresh.size === 0) return { files, storedFiles: 0, storedBytes: 0, lookedUpAt };
    const written = await mapLimit([...fresh], OBJECT_WRITES, async ([digest, data]) =>
      (await artifacts.putObject(request.orgId, digest, data)) ? data.length : null,
    );
    const stored = written.filter((bytes) => bytes !== null);
    return { files, storedFiles: stored.length, storedBytes: stored.reduce((sum, bytes) => sum + bytes, 0), lookedUpAt };
  }

  /**
   * The intake stores the manifest with the record and job (locally one commit). Past the upload
   * window it stores nothing (SourceWindowPassed): then the manifest is stored alone, the objects are
   * looked up again (checkObjectsStill), and the record and job follow.
   */
  private async record(record: DeploymentRecord, traceparent: string | null, source: IntakeSource, files: readonly ManifestFile[]): Promise<DeploymentRecord> {
    const { intake, artifacts } = this.adapters;
    const options = { maxActivePerOrg: this.options.maxActivePerOrg };
    try {
      return await intake.submit(record, jobFor(record, traceparent), options, source);
    } catch (error) {
      if (!(error instanceof SourceWindowPassed)) throw error;
    }
    await artifacts.putSource({ orgId: record.orgId, deploymentId: record.id }, source.manifest);
    await this.checkObjectsStill(record.orgId, record.id, files);
    return intake.submit(record, jobFor(record, traceparent), options);
  }

  /**
   * Past the upload window: the delete-app job may have deleted an object this manifest names after
   * it was looked up (it waits the same window before it reads manifests). The manifest is stored, so
   * a lookup now keeps every object still there (it refreshes a marked one); a missing one fails the
   * request as SOURCE_FILES_MISSING, which the client answers by sending the content again.
   */
  private async checkObjectsStill(orgId: string, id: string, files: readonly ManifestFile[]): Promise<void> {
    const found = await this.adapters.artifacts.findObjects(orgId, files.map((file) => file.sha256));
    const missing = files.filter((file) => !found.has(file.sha256));
    if (missing.length === 0) return;
    await this.discard(orgId, id);
    throw new DeployError('SOURCE_FILES_MISSING', `${missing.length} files were deleted from this organization's storage while this request ran; send them with content`, {
      details: { missing: missing.map((file) => ({ path: file.path, sha256: file.sha256 })) },
    });
  }

  /**
   * The deployment an earlier request with this Idempotency-Key made (same body), or null when the key
   * is new; IDEMPOTENCY_CONFLICT when it came with another body.
   */
  async replayOf(orgId: string, idempotency: { key: string; body: unknown } | KeyedRequest | null): Promise<DeploymentRecord | null> {
    if (idempotency === null) return null;
    const earlier = await this.adapters.store.findByIdempotencyKey(orgId, idempotency.key);
    return earlier === null ? null : this.replay(earlier, keyedRequest(idempotency).requestHash);
  }

  /**
   * Records and queues a deployment made by the API itself (rollback, config, rebuild of the live
   * source: issue 12) through the same intake as POST /deploy: the active limit, the outbox and the
   * Idempotency-Key (in `record.idempotency`) hold alike. `manifest`: the source manifest it runs
   * (copied from the deployment it derives from), stored before the record as POST /deploy does.
   */
  async submitRecord(record: DeploymentRecord, values: Record<string, string>, manifest: Buffer | null, traceparent: string | null = null): Promise<DeploymentRecord> {
    const { store, intake, secrets } = this.adapters;
    await this.assertBelowLimit(record.orgId);
    await secrets.put(record.id, values);
    try {
      // A manifest copied from a recorded deployment: its objects need no second look (storeBy: never).
      const source = manifest === null ? undefined : { manifest, storeBy: Number.POSITIVE_INFINITY };
      return await intake.submit(record, jobFor(record, traceparent), { maxActivePerOrg: this.options.maxActivePerOrg }, source);
    } catch (error) {
      await this.discard(record.orgId, record.id);
      if (error instanceof DeployError && error.code === 'CONFLICT' && record.idempotency !== null) {
        const winner = await store.findByIdempotencyKey(record.orgId, record.idempotency.key);
        if (winner !== null) return this.replay(winner, record.idempotency.requestHash);
      }
      throw error;
    }
  }

  /** A cheap early refusal (429) for an org at its active limit; the intake checks again, atomically where the store can. */
  private async assertBelowLimit(orgId: string): Promise<void> {
    const active = await this.adapters.store.countActive(orgId);
    if (active >= this.options.maxActivePerOrg) throw quotaExceeded(active, this.options.maxActivePerOrg);
  }

  private replay(earlier: DeploymentRecord, requestHash: string): DeploymentRecord {
    if (earlier.idempotency?.requestHash !== requestHash) {
      throw new DeployError('IDEMPOTENCY_CONFLICT', 'This Idempotency-Key was used with a different request body', {
        details: { deploymentId: earlier.id },
      });
    }
    return earlier;
  }

  private async discard(orgId: string, id: string): Promise<void> {
    await Promise.allSettled([this.adapters.artifacts.deleteAll({ orgId, deploymentId: id }), this.adapters.secrets.delete(id)]).then((results) => {
      for (const result of results) {
        if (result.status === 'rejected') this.options.logger.warn({ err: result.reason as unknown, deploymentId: id }, 'could not discard source or secrets');
      }
    });
  }

  /** Queued: cancelled at once. In progress: flagged; the worker stops and undoes what it made. */
  async cancel(orgId: string, deploymentId: string): Promise<DeploymentRecord> {
    return updateDeployment(
      this.adapters.store,
      { orgId, deploymentId },
      (current) => {
        if (isTerminal(current.status)) {
          throw new DeployError('INVALID_STATE', `Deployment is already ${current.status}; only queued or in-progress deployments can be cancelled`, {
            details: { status: current.status },
          });
        }
        return current.cancelRequested ? null : [{ type: 'cancel_requested' }];
      },
      this.options.clock,
    );
  }

  /** A failed or cancelled deployment runs again as a new attempt, from its first unfinished step. */
  async retry(orgId: string, deploymentId: string, traceparent: string | null): Promise<DeploymentRecord> {
    const { store, intake } = this.adapters;
    for (let tries = 0; ; tries += 1) {
      const current = await store.get({ orgId, deploymentId });
      if (current === null) throw new DeployError('NOT_FOUND', `Deployment ${deploymentId} not found`);
      if (current.status !== 'failed' && current.status !== 'cancelled') {
        throw new DeployError('INVALID_STATE', `Deployment is ${current.status}; only failed or cancelled deployments can be retried`, {
          details: { status: current.status },
        });
      }
      const next = apply(current, { type: 'retried' }, this.options.clock());
      try {
        return await intake.resubmit(next, jobFor(next, traceparent), { maxActivePerOrg: this.options.maxActivePerOrg });
      } catch (error) {
        if (error instanceof DeployError && error.code === 'CONCURRENT_UPDATE' && tries < 5) continue;
        throw error;
      }
    }
  }
}

