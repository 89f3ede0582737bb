import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { DeploymentRecord, LogLine } from '@zepid/core';
import { DeployError, isTerminal } from '@zepid/core';
import type { AppContext } from '../context.ts';
import type { DeploymentWatch } from '../deployment-watch.ts';
import { DeploymentWatches, FALLBACK_POLL_MS } from '../deployment-watch.ts';
import { SseChannel, StreamQuota } from '../event-stream.ts';
import { DeploymentIdParams, errorResponses } from '../schemas.ts';
import { statusView, summaryView } from '../views.ts';

/** Open event streams one token may hold on one API process; more is a 429. */
export const DEFAULT_STREAMS_PER_TOKEN = 20;
/**
 * The worker appends a deployment's last lines within ~250 ms of writing its terminal status (its
 * log flushes on a 250 ms timer and on closing), so `end` waits until the status is this old and
 * one more read found nothing new.
 */
const FINAL_LOG_GRACE_MS = 1000;
/** How many of the org's newest deployments `GET /events` compares on each change. */
const ORG_WINDOW = 50;
const ORG_SNAPSHOT = 20;

export const LogEventData = Type.Object({
  seq: Type.Integer({ minimum: 1, description: 'Line number in the deployment\'s log, from 1; also the event\'s `id`.' }),
  timestamp: Type.String(),
  step: Type.Union([Type.String(), Type.Null()]),
  level: Type.Union([Type.Literal('info'), Type.Literal('warn'), Type.Literal('error')]),
  message: Type.String(),
});

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
  const quota = new StreamQuota(context.streamsPerToken ?? DEFAULT_STREAMS_PER_TOKEN);
  const security = [{ bearerAuth: [] }];
  app.addHook('preClose', (done) => {
    quota.endAll();
    done();
  });

  /** Opens a stream for the request's token or answers 429; `run` follows until the channel closes. */
  const openStream = (authorization: string | undefined) => {
    const release = quota.acquire(authorization);
    if (release === null) {
      throw new DeployError('RATE_LIMITED', `This token already has ${quota.limit} event streams open; close one first`, { retryAfterSeconds: 5 });
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

  const follow = async (channel: SseChannel, record: DeploymentRecord, after: number): Promise<void> => {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    const { watch, release } = watches.follow(ref);
    try {
      await followWith(channel, record, after, watch);
    } finally {
      release();
    }
  };

  const followWith = async (channel: SseChannel, record: DeploymentRecord, after: number, watch: DeploymentWatch): Promise<void> => {
    const ref = { orgId: record.orgId, deploymentId: record.id };
    let offset = 0;
    let seq = 0;
    let sentEtag: string | null = null;
    let sentStatus = '';
    let current: DeploymentRecord | null = record;
    while (channel.open) {
      const seen = watch.version;
      if (current === null) {
        // Deleted, or no longer visible to this token's org: the stream ends.
        await channel.send('end', { deploymentId: ref.deploymentId, status: null, reason: 'gone' });
        return;
      }
      if (current.etag !== sentEtag) {
        // Not every write changes what a client sees (the webhook dispatcher empties the outbox): send changes only.
        const view = viewOf(current);
        if (view !== sentStatus) await channel.send('status', JSON.parse(view) as unknown);
        sentEtag = current.etag;
        sentStatus = view;
      }
      const from = offset;
      const read = await shared(`log:${ref.deploymentId}:${from}`, () => adapters.artifacts.readLogFrom(ref.deploymentId, from));
      offset = read.next;
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
      let waitMs = Math.min(FALLBACK_POLL_MS, channel.heartbeatDueIn());
      if (isTerminal(current.status)) {
        const settledFor = Date.now() - Date.parse(current.finishedAt ?? current.updatedAt);
        if (read.text === '' && settledFor >= FINAL_LOG_GRACE_MS) {
          await channel.send('end', { deploymentId: ref.deploymentId, status: current.status, reason: 'terminal' });
          return;
        }
        waitMs = Math.min(waitMs, Math.max(10, FINAL_LOG_GRACE_MS - settledFor));
      }
      await watch.wait(seen, waitMs, channel.signal);
      if (!channel.open) return;
      if (channel.heartbeatDueIn() === 0) await channel.heartbeat();
      current = await shared(`record:${ref.orgId}:${ref.deploymentId}`, () => adapters.store.get(ref));
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
          'with nothing lost or repeated. A comment line comes every 15 s. At most SSE_MAX_STREAMS_PER_TOKEN streams per token per API replica (429 beyond).',
        security,
        params: DeploymentIdParams,
        querystring: Type.Object({ after: Type.Optional(Type.Integer({ minimum: 0, maximum: 999_999_999, description: 'Resume after this log line (seq).' })) }),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 32 })) }),
        response: {
          200: {
            description: 'Events: `status` (StatusEvent), `log` (LogEvent, with `id`), `end` ({deploymentId, status, reason}).',
            content: { 'text/event-stream': { schema: streamDoc('Events `status`, `log` (with `id: <seq>`) and `end`.') } },
          },
          ...errorResponses(400, 401, 404, 429, 503),
        },
      },
    },
    async (request, reply) => {
      const after = parseAfter(request.headers['last-event-id'], request.query.after);
      const record = await adapters.store.get({ orgId: request.orgId, deploymentId: request.params.id });
      if (record === null) throw new DeployError('NOT_FOUND', `Deployment ${request.params.id} not found`);
      const release = openStream(request.headers.authorization);
      const channel = new SseChannel(reply);
      const untrack = quota.track(channel);
      try {
        await follow(channel, record, after);
      } catch (error) {
        request.log.warn({ err: error, deploymentId: record.id }, 'event stream stopped on an error');
      } finally {
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
          `change of any of the ${ORG_WINDOW} newest as it happens, each change followed by \`event: app\` (the app as GET /apps lists it). ` +
          'A comment line comes every 15 s; the stream stays open until the client closes it.',
        security,
        response: {
          200: {
            description: 'Events: `deployment` (DeploymentSummary), `app` (AppView).',
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
      try {
        let recent = await adapters.store.listRecent(request.orgId, ORG_WINDOW);
        for (const record of recent) versions.set(record.id, record.etag);
        for (const record of recent.slice(0, ORG_SNAPSHOT).reverse()) await channel.send('deployment', summaryView(record));
        while (channel.open) {
          const seen = adapters.changes.rung;
          await adapters.changes.wait(seen, Math.min(FALLBACK_POLL_MS, channel.heartbeatDueIn()), channel.signal);
          if (!channel.open) break;
          if (channel.heartbeatDueIn() === 0) await channel.heartbeat();
          recent = await adapters.store.listRecent(request.orgId, ORG_WINDOW);
          const changed = recent.filter((record) => versions.get(record.id) !== record.etag);
          versions.clear();
          for (const record of recent) versions.set(record.id, record.etag);
          // Oldest change first, as they happened; then each app they belong to as it is now (GET /apps' item).
          for (const record of changed.reverse()) await channel.send('deployment', summaryView(record));
          const apps = new Map(changed.map((record) => [record.appName, record]));
          for (const record of apps.values()) {
            await channel.send('app', await context.apps.view({ orgId: record.orgId, projectId: record.projectId, environment: record.environment, appName: record.appName }));
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

