import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { AppRef, DeploymentRecord, DeploymentRef, LogLine } from '@zepid/core';
import { DeployError, isTerminal } from '@zepid/core';
import type { AppContext } from '../context.ts';
import type { DeploymentWatch } from '../deployment-watch.ts';
import { DeploymentWatches, FALLBACK_POLL_MS } from '../deployment-watch.ts';
import { SseChannel, StreamQuota } from '../event-stream.ts';
import { AppView, DeploymentIdParams, DeploymentStatusView, DeploymentSummary, errorResponses, StatusView } from '../schemas.ts';
import { statusView, summaryView } from '../views.ts';

/** Open event streams one token may hold on one API process; more is a 429. */
export const DEFAULT_STREAMS_PER_TOKEN = 20;
/**
 * Open event streams on one API process in all; more is a 503. An idle stream costs ~16 KB of RSS
 * (BENCHMARKS.md) over an idle API of ~105 MB: 600 keep it within its 120 MB budget.
 */
export const DEFAULT_MAX_STREAMS = 600;
/**
 * The worker appends a deployment's last lines within ~250 ms of writing its terminal status (its
 * log flushes on a 250 ms timer and on closing), so `end` waits until the status is this old and
 * one more read found nothing new.
 */
const FINAL_LOG_GRACE_MS = 1000;
/** How many of the org's newest deployments `GET /events` compares on each change. */
const ORG_WINDOW = 50;
const ORG_SNAPSHOT = 20;

export const LogEventData = Type.Object(
  {
    seq: Type.Integer({ minimum: 1, description: 'Line number in the deployment\'s log, from 1; also the event\'s `id`.' }),
    timestamp: Type.String(),
    step: Type.Union([Type.String(), Type.Null()]),
    level: Type.Union([Type.Literal('info'), Type.Literal('warn'), Type.Literal('error')]),
    message: Type.String(),
  },
  { $id: 'SseLogEvent', additionalProperties: false, description: '`data` of an `event: log` (GET /deploy/{id}/events); the event\'s `id` is `seq`.' },
);

/**
 * The `data` of each Server-Sent Event, as components of the OpenAPI document (app.ts adds them):
 * a `text/event-stream` body is a string to OpenAPI, so each event's JSON is described here.
 */
export function sseEventSchemas() {
  return [
    Type.Omit(StatusView, ['logs'], {
      $id: 'SseStatusEvent',
      additionalProperties: false,
      description: '`data` of an `event: status` (GET /deploy/{id}/events): the status view, as GET /deploy/{id}/status, without `logs` (they come as `log` events).',
    }),
    LogEventData,
    Type.Object(
      {
        deploymentId: Type.String(),
        status: Type.Union([DeploymentStatusView, Type.Null()], { description: 'The terminal status; null when the deployment is gone.' }),
        reason: Type.Union([Type.Literal('terminal'), Type.Literal('gone')], {
          description: '`terminal`: the deployment ended and every line was sent. `gone`: deleted, or no longer visible to the token\'s organization.',
        }),
      },
      { $id: 'SseEndEvent', additionalProperties: false, description: '`data` of the last event, `event: end` (GET /deploy/{id}/events); the stream closes after it.' },
    ),
    Type.Object(DeploymentSummary.properties, {
      $id: 'SseDeploymentEvent',
      additionalProperties: false,
      description: "`data` of an `event: deployment` (GET /events): the deployment's summary as in GET /deploy/project/{projectId}.",
    }),
    Type.Object(
      { appName: Type.String(), projectId: Type.String(), environment: Type.String() },
      { $id: 'SseAppRemovedEvent', additionalProperties: false, description: '`data` of an `event: app_removed` (GET /events): the app was deleted (its delete job removed the last of it).' },
    ),
    Type.Object(AppView.properties, {
      $id: 'SseAppEvent',
      additionalProperties: false,
      description: '`data` of an `event: app` (GET /events): the app as in GET /apps, after each change of it.',
    }),
  ];
}

const streamDoc = (events: string) =>
  Type.String({
    description: `A \`text/event-stream\` (Server-Sent Events). ${events} A comment line (\`: keep-alive\`) comes every 15 s.`,
  });

/** The status view without its log lines: log lines travel as `log` events. */
function statusEvent(record: DeploymentRecord) {
  const { logs: _logs, ...view } = statusView(record, []);
  return view;
}

function parseAfter(header: string | string[] | undefined, query: number | undefined): number {
  if (query !== undefined) return query;
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || value.trim() === '') return 0;
  if (!/^\d{1,9}$/.test(value.trim())) {
    throw new DeployError('VALIDATION_ERROR', 'Last-Event-ID must be the id (a line number) of a log event', {
      details: [{ field: 'last-event-id', message: 'must be a non-negative integer' }],
    });
  }
  return Number(value.trim());
}

/**
 * Live streams. Every event comes from the store and the log, not from this process's memory, so any
 * replica serves any stream and a reconnect to another replica resumes exactly: the change signal
 * (a file watch locally, a short poll in Azure) only says when to read again.
 */
export const eventRoutes: FastifyPluginAsyncTypebox<{ context: AppContext }> = async (app, { context }) => {
  const { adapters } = context;
  const quota = new StreamQuota(context.streamsPerToken ?? DEFAULT_STREAMS_PER_TOKEN, context.maxStreams ?? DEFAULT_MAX_STREAMS, context.sseHeartbeatMs);
  const security = [{ bearerAuth: [] }];
  app.addHook('preClose', (done) => {
    quota.endAll();
    done();
  });

  /** A place for one more stream, or 429 (the token's cap) / 503 (this replica's cap), both with Retry-After. */
  const openStream = (authorization: string | undefined) => {
    const release = quota.acquire(authorization);
    if (release === 'token') {
      throw new DeployError('RATE_LIMITED', `This token already has ${quota.limit} event streams open; close one first`, { retryAfterSeconds: 5 });
    }
    if (release === 'replica') {
      throw new DeployError('SERVER_BUSY', `This API replica already serves ${quota.totalLimit} event streams (SSE_MAX_STREAMS); try again shortly`, {
        retryAfterSeconds: 5,
      });
    }
    return release;
  };

  /**
   * Reads shared by the followers that a change signal wakes together: 1,000 streams of one
   * deployment make one record read and one log read per signal, not 1,000. Keyed by the signal's
   * count, so a read that began before a signal is never taken as newer than it; dropped once settled.
   */
  const inFlight = new Map<string, { rung: number; read: Promise<unknown> }>();
  const shared = <T>(key: string, read: () => Promise<T>): Promise<T> => {
    const rung = adapters.changes.rung;
    const hit = inFlight.get(key);
    if (hit !== undefined && hit.rung === rung) return hit.read as Promise<T>;
    const promise = read();
    inFlight.set(key, { rung, read: promise });
    const drop = () => {
      if (inFlight.get(key)?.read === promise) inFlight.delete(key);
    };
    promise.then(drop, drop);
    return promise;
  };
  const views = new WeakMap<DeploymentRecord, string>();
  const viewOf = (record: DeploymentRecord) => {
    let view = views.get(record);
    if (view === undefined) {
      view = JSON.stringify(statusEvent(record));
      views.set(record, view);
    }
    return view;
  };

  const watches = new DeploymentWatches(adapters);
  app.addHook('onClose', (_instance, done) => {
    watches.stopAll();
    done();
  });

  /**
   * The deployment's watch, seeded with this request's read (404 when there is none). The record read
   * here stays in no stream's frame: the watch's copy is the one its streams share.
   */
  const watchOf = async (ref: DeploymentRef) => {
    const record = await adapters.store.get(ref);
    if (record === null) throw new DeployError('NOT_FOUND', `Deployment ${ref.deploymentId} not found`);
    return watches.follow(ref, record);
  };

  /** Sends the log lines after byte `offset` (line `seq`) that the client has not seen; where it got to. */
  const sendLog = async (channel: SseChannel, deploymentId: string, offset: number, seq: number, after: number) => {
    const read = await shared(`log:${deploymentId}:${offset}`, () => adapters.artifacts.readLogFrom(deploymentId, offset));
    for (const raw of read.text.split('\n')) {
      if (raw === '') continue;
      seq += 1;
      if (seq <= after) continue;
      let line: LogLine;
      try {
        line = JSON.parse(raw) as LogLine;
      } catch {
        continue; // a torn line (a crash mid-append) keeps its number, so later ids stay stable
      }
      await channel.send('log', { seq, timestamp: line.timestamp, step: line.step, level: line.level, message: line.message }, seq);
    }
    return { offset: read.next, seq, none: read.text === '' };
  };

  /**
   * Sends a deployment's status and log to one stream until it ends. What an idle follower keeps is
   * its offsets and the status it sent last (the watch's shared string); the record is the watch's
   * one copy, and it sleeps on the watch with no timer (heartbeats come from the quota's one timer).
   */
  const follow = async (channel: SseChannel, ref: DeploymentRef, after: number, watch: DeploymentWatch): Promise<void> => {
    let offset = 0;
    let seq = 0;
    let sentEtag: string | null = null;
    let sentStatus = '';
    while (channel.open) {
      const seen = watch.version;
      const current = watch.record;
      if (current === null || current === undefined) {
        // Deleted, or no longer visible to this token's org: the stream ends.
        await channel.send('end', { deploymentId: ref.deploymentId, status: null, reason: 'gone' });
        return;
      }
      if (current.etag !== sentEtag) {
        // Not every write changes what a client sees (the webhook dispatcher empties the outbox): send changes only.
        const view = viewOf(current);
        if (view !== sentStatus) await channel.sendJson('status', view);
        sentEtag = current.etag;
        sentStatus = view;
      }
      const sent = await sendLog(channel, ref.deploymentId, offset, seq, after);
      offset = sent.offset;
      seq = sent.seq;
      let waitMs: number | null = null;
      if (isTerminal(current.status)) {
        const settledFor = Date.now() - Date.parse(current.finishedAt ?? current.updatedAt);
        if (sent.none && settledFor >= FINAL_LOG_GRACE_MS) {
          await channel.send('end', { deploymentId: ref.deploymentId, status: current.status, reason: 'terminal' });
          return;
        }
        waitMs = Math.max(10, FINAL_LOG_GRACE_MS - settledFor);
      }
      await watch.wait(seen, waitMs, channel.signal);
    }
  };

  app.get(
    '/deploy/:id/events',
    {
      schema: {
        tags: ['deployments'],
        summary: 'Follow a deployment live (Server-Sent Events): status changes, log lines, then end',
        description:
          'A `text/event-stream`. First `event: status` (the status view, without logs) and an `event: log` per line so far; then each change ' +
          'as it happens; `event: end` once the deployment is terminal and every line was sent, then the stream closes. Log events carry ' +
          '`id: <seq>` (the line number): reconnect with `Last-Event-ID` (EventSource does it) or `?after=<seq>` to continue after that line ' +
          'with nothing lost or repeated. A comment line comes every 15 s. At most SSE_MAX_STREAMS_PER_TOKEN streams per token per API replica (429 beyond) ' +
          'and SSE_MAX_STREAMS in all per replica (503 SERVER_BUSY beyond), both with Retry-After.',
        security,
        params: DeploymentIdParams,
        querystring: Type.Object({ after: Type.Optional(Type.Integer({ minimum: 0, maximum: 999_999_999, description: 'Resume after this log line (seq).' })) }),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 32 })) }),
        response: {
          200: {
            description: 'Events: `status` (data: SseStatusEvent), `log` (data: SseLogEvent, with `id: <seq>`), `end` (data: SseEndEvent).',
            content: { 'text/event-stream': { schema: streamDoc('Events `status`, `log` (with `id: <seq>`) and `end`.') } },
          },
          ...errorResponses(400, 401, 404, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const after = parseAfter(request.headers['last-event-id'], request.query.after);
      const ref: DeploymentRef = { orgId: request.orgId, deploymentId: request.params.id };
      const following = await watchOf(ref);
      let release: () => void;
      try {
        release = openStream(request.headers.authorization);
      } catch (error) {
        following.release();
        throw error;
      }
      const channel = new SseChannel(reply);
      const untrack = quota.track(channel);
      try {
        await follow(channel, ref, after, following.watch);
      } catch (error) {
        request.log.warn({ err: error, deploymentId: ref.deploymentId }, 'event stream stopped on an error');
      } finally {
        following.release();
        release();
        untrack();
        channel.end();
      }
    },
  );

  app.get(
    '/events',
    {
      schema: {
        tags: ['deployments'],
        summary: "Follow your organization's deployments live (Server-Sent Events)",
        description:
          `A \`text/event-stream\` of \`event: deployment\` (the summary as in the project list): first the ${ORG_SNAPSHOT} newest, then each ` +
          `change of any of the ${ORG_WINDOW} newest as it happens, each change followed by \`event: app\` (the app as GET /apps lists it), and \`event: app_removed\` once a deleted app is gone. ` +
          'A comment line comes every 15 s; the stream stays open until the client closes it.',
        security,
        response: {
          200: {
            description: 'Events: `deployment` (data: SseDeploymentEvent), `app` (data: SseAppEvent), `app_removed` (data: SseAppRemovedEvent).',
            content: { 'text/event-stream': { schema: streamDoc('Events `deployment` and `app`.') } },
          },
          ...errorResponses(401, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const release = openStream(request.headers.authorization);
      const channel = new SseChannel(reply);
      const untrack = quota.track(channel);
      const versions = new Map<string, string>();
      const appOf = (record: DeploymentRecord): AppRef => ({ orgId: record.orgId, projectId: record.projectId, environment: record.environment, appName: record.appName });
      try {
        let recent = await adapters.store.listRecent(request.orgId, ORG_WINDOW);
        for (const record of recent) versions.set(record.id, record.etag);
        /** The app of each deployment in the window: a deployment that leaves it may have left with its app (deleted). */
        let appsInWindow = new Map(recent.map((record) => [record.id, appOf(record)]));
        const leaving = new Map<string, AppRef>();
        for (const record of recent.slice(0, ORG_SNAPSHOT).reverse()) await channel.send('deployment', summaryView(record));
        while (channel.open) {
          const seen = adapters.changes.rung;
          await adapters.changes.wait(seen, FALLBACK_POLL_MS, channel.signal);
          if (!channel.open) break;
          // The org's streams woken by one signal share one listing.
          recent = await shared(`recent:${request.orgId}`, () => adapters.store.listRecent(request.orgId, ORG_WINDOW));
          const changed = recent.filter((record) => versions.get(record.id) !== record.etag);
          versions.clear();
          for (const record of recent) versions.set(record.id, record.etag);
          // Oldest change first, as they happened; then each app they belong to as it is now (GET /apps' item).
          for (const record of changed.reverse()) await channel.send('deployment', summaryView(record));
          const apps = new Map(changed.map((record) => [record.appName, appOf(record)]));
          // Deployments gone from the window: newer ones pushed them out, or their app was deleted.
          const listed = new Set(recent.map((record) => record.id));
          const left = new Map<string, AppRef>();
          for (const [id, app] of appsInWindow) if (!listed.has(id) && !apps.has(app.appName)) left.set(app.appName, app);
          appsInWindow = new Map(recent.map((record) => [record.id, appOf(record)]));
          for (const app of apps.values()) await channel.send('app', await context.apps.view(app));
          // An app being deleted loses its deployments before its record: it stays watched until it is gone.
          for (const app of left.values()) leaving.set(app.appName, app);
          for (const app of [...leaving.values()]) {
            const view = await context.apps.viewIfExists(app);
            if (view === null || view.status !== 'deleting') leaving.delete(app.appName);
            if (view === null) await channel.send('app_removed', { appName: app.appName, projectId: app.projectId, environment: app.environment });
            else await channel.send('app', view);
          }
        }
      } catch (error) {
        request.log.warn({ err: error }, 'event stream stopped on an error');
      } finally {
        release();
        untrack();
        channel.end();
      }
    },
  );
};

