import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { FastifyBaseLogger } from 'fastify';
import type { DeploymentRecord, DeploymentRef, LogLine } from '@zepid/core';
import { DeployError, isTerminal } from '@zepid/core';
import type { AppContext } from '../context.ts';
import type { Follower, Watch } from '../deployment-watch.ts';
import { DeploymentWatch, FALLBACK_POLL_MS, Watches } from '../deployment-watch.ts';
import type { ClosedListener, StreamPlace } from '../event-stream.ts';
import { LazyChildLogger, SseChannel, StreamQuota } from '../event-stream.ts';
import type { OrgFollower } from '../org-watch.ts';
import { ORG_WINDOW, OrgWatch } from '../org-watch.ts';
import { AppView, DeploymentIdParams, DeploymentStatusView, DeploymentSummary, errorResponses, StatusView } from '../schemas.ts';
import { statusView, summaryView } from '../views.ts';

/** Open event streams one token may hold across all API replicas; more is a 429. */
export const DEFAULT_STREAMS_PER_TOKEN = 20;
/**
 * Open event streams on one API process in all; more is a 503. 1,000 idle streams take an idle API
 * of ~98 MB to 110-117 MB (12-20 KB each, BENCHMARKS.md): within its 120 MB budget.
 */
export const DEFAULT_MAX_STREAMS = 1000;
/**
 * The worker appends a deployment's last lines within ~250 ms of writing its terminal status (its
 * log flushes on a 250 ms timer and on closing), so `end` waits until the status is this old and
 * one more read found nothing new.
 */
const FINAL_LOG_GRACE_MS = 1000;
/** How many of the org's newest deployments a new `GET /events` stream gets first. */
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
/**
 * A stream's life outside any request frame: the Fastify handler returns once the stream is open, and
 * the stream's watch wakes it (`wake`) when what it follows changed. `pump` sends what is new and
 * returns; a wake during a pump makes it run once more. So an idle stream is this object, in its
 * watch's set: no pending promise, no timer, no closure. It holds its quota place and its watch
 * itself and gives both back when its channel closes (`channelClosed`), instead of keeping a
 * release closure for each (~0.6 KB less per idle stream, BENCHMARKS.md).
 */
abstract class Stream<W extends Watch> implements Follower, ClosedListener {
  readonly channel: SseChannel;
  protected readonly watch: W;
  private readonly log: FastifyBaseLogger;
  private readonly quota: StreamQuota;
  private readonly place: StreamPlace;
  private finished = false;
  private running = false;
  private again = false;

  constructor(channel: SseChannel, log: FastifyBaseLogger, quota: StreamQuota, place: StreamPlace, watch: W) {
    this.channel = channel;
    this.log = log;
    this.quota = quota;
    this.place = place;
    this.watch = watch;
    quota.track(channel);
    watch.follow(this);
    // Last: a client already gone finishes the stream at once, giving back what it just took.
    channel.whenClosed(this);
  }

  wake(): void {
    if (!this.channel.open) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.run();
  }

  /** The channel closed (the client went away, or the stream ended): its place, heartbeat and watch are given back. */
  channelClosed(): void {
    if (this.finished) return;
    this.finished = true;
    this.quota.release(this.place);
    this.quota.untrack(this.channel);
    this.watch.unfollow(this);
    this.finish();
  }

  /** Sends what is new; false once the stream is over. */
  protected abstract pump(): Promise<boolean>;

  /** What a stream kind gives back besides (a timer). */
  protected finish(): void {}

  private async run(): Promise<void> {
    try {
      do {
        this.again = false;
        if (!(await this.pump())) {
          this.channel.end();
          return;
        }
      } while (this.again && this.channel.open);
    } catch (error) {
      this.log.warn({ err: error }, 'event stream stopped on an error');
      this.channel.end();
    } finally {
      this.running = false;
    }
  }
}

/**
 * Live streams. Every event comes from the store and the log, not from this process's memory, so any
 * replica serves any stream and a reconnect to another replica resumes exactly: the change signal
 * (a file watch locally, a shared etag poll in Azure) only says when to read again, and one watch
 * per followed deployment or org reads for all of this process's streams.
 */
export const eventRoutes: FastifyPluginAsyncTypebox<{ context: AppContext }> = async (app, { context }) => {
  const { adapters } = context;
  const quota = new StreamQuota({
    maxPerToken: context.streamsPerToken ?? DEFAULT_STREAMS_PER_TOKEN,
    maxTotal: context.maxStreams ?? DEFAULT_MAX_STREAMS,
    leases: adapters.streamLeases,
    leaseTtlMs: context.streamLeaseTtlMs,
    heartbeatMs: context.sseHeartbeatMs,
    logger: app.log,
  });
  const resyncMs = context.streamResyncMs ?? FALLBACK_POLL_MS;
  const security = [{ bearerAuth: [] }];
  app.addHook('preClose', async () => {
    await quota.endAll();
  });

  /** A place for one more stream, or 429 (the token's cap) / 503 (this replica's cap), both with Retry-After. */
  const openStream = async (orgId: string, authorization: string | undefined): Promise<StreamPlace> => {
    const place = await quota.acquire(orgId, authorization);
    if (place === 'token') {
      throw new DeployError('RATE_LIMITED', `This token already has ${quota.limit} event streams open (on all the API's replicas); close one first`, {
        retryAfterSeconds: 5,
      });
    }
    if (place === 'replica') {
      throw new DeployError('SERVER_BUSY', `This API replica already serves ${quota.totalLimit} event streams (SSE_MAX_STREAMS); try again shortly`, {
        retryAfterSeconds: 5,
      });
    }
    return place;
  };

  /**
   * Log reads shared by the followers that a change wakes together: 1,000 streams of one deployment
   * make one log read per change, not 1,000. Keyed by the signal's count, so a read that began before
   * a signal is never taken as newer than it; dropped once settled.
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

  const deploymentWatches = new Watches<DeploymentWatch>((key, onIdle) => {
    const [orgId = '', deploymentId = ''] = key.split('\n');
    return new DeploymentWatch(adapters, { orgId, deploymentId }, resyncMs, onIdle);
  });
  const orgWatches = new Watches<OrgWatch>((orgId, onIdle) => new OrgWatch(adapters, orgId, context.apps, resyncMs, onIdle));
  app.addHook('onClose', (_instance, done) => {
    deploymentWatches.stopAll();
    orgWatches.stopAll();
    done();
  });

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
   * A deployment's status and log to one stream until it ends. What an idle follower keeps is its
   * offsets and the status it sent last (the watch's shared string); the record is the watch's one copy.
   */
  class DeploymentStream extends Stream<DeploymentWatch> {
    private offset = 0;
    private seq = 0;
    private sentEtag: string | null = null;
    private sentStatus = '';
    private graceTimer: NodeJS.Timeout | null = null;
    private readonly deploymentId: string;
    private readonly after: number;

    constructor(channel: SseChannel, log: FastifyBaseLogger, place: StreamPlace, watch: DeploymentWatch, deploymentId: string, after: number) {
      super(channel, log, quota, place, watch);
      this.deploymentId = deploymentId;
      this.after = after;
    }

    protected override finish(): void {
      // Also runs inside super() for a client already gone, before this class's fields are set.
      if (this.graceTimer) clearTimeout(this.graceTimer);
      this.graceTimer = null;
    }

    protected async pump(): Promise<boolean> {
      const current = this.watch.record;
      if (current === null || current === undefined || this.watch.stopping) {
        if (this.watch.stopping) return false; // the server is closing: the client reconnects elsewhere
        // Deleted, or no longer visible to this token's org: the stream ends.
        await this.channel.send('end', { deploymentId: this.deploymentId, status: null, reason: 'gone' });
        return false;
      }
      if (current.etag !== this.sentEtag) {
        // Not every write changes what a client sees (the webhook dispatcher empties the outbox): send changes only.
        const view = viewOf(current);
        if (view !== this.sentStatus) await this.channel.sendJson('status', view);
        this.sentEtag = current.etag;
        this.sentStatus = view;
      }
      const sent = await sendLog(this.channel, this.deploymentId, this.offset, this.seq, this.after);
      this.offset = sent.offset;
      this.seq = sent.seq;
      if (isTerminal(current.status)) {
        const settledFor = Date.now() - Date.parse(current.finishedAt ?? current.updatedAt);
        if (sent.none && settledFor >= FINAL_LOG_GRACE_MS) {
          await this.channel.send('end', { deploymentId: this.deploymentId, status: current.status, reason: 'terminal' });
          return false;
        }
        // Looks again once the last lines had their time, change or not.
        if (this.graceTimer !== null) clearTimeout(this.graceTimer);
        this.graceTimer = setTimeout(() => this.wake(), Math.max(10, FINAL_LOG_GRACE_MS - settledFor));
      }
      return true;
    }
  }

  /** The org's deployment and app changes to one stream: the snapshot, then the watch's events as they come. */
  class OrgStream extends Stream<OrgWatch> implements OrgFollower {
    sent = 0;
    private started = false;

    constructor(channel: SseChannel, log: FastifyBaseLogger, place: StreamPlace, watch: OrgWatch) {
      super(channel, log, quota, place, watch);
    }

    /** The snapshot: the newest deployments as the watch listed them; the events after it follow. */
    async start(): Promise<void> {
      await this.watch.ready();
      const recent = this.watch.recent ?? [];
      this.sent = this.watch.newest;
      for (const record of recent.slice(0, ORG_SNAPSHOT).reverse()) await this.channel.send('deployment', summaryView(record));
      this.started = true;
      this.wake();
    }

    protected async pump(): Promise<boolean> {
      if (this.watch.stopping) return false;
      if (!this.started) return true; // the snapshot is still being sent; start() wakes it after
      const events = this.watch.since(this.sent);
      // Too far behind for the watch's backlog: EventSource reconnects and starts from a new snapshot.
      if (events === null) return false;
      for (const event of events) {
        await this.channel.sendJson(event.event, event.json);
        this.sent = event.n;
      }
      return true;
    }
  }

  app.get(
    '/deploy/:id/events',
    {
      childLoggerFactory: LazyChildLogger.factory,
      schema: {
        tags: ['deployments'],
        summary: 'Follow a deployment live (Server-Sent Events): status changes, log lines, then end',
        description:
          'A `text/event-stream`. First `event: status` (the status view, without logs) and an `event: log` per line so far; then each change ' +
          'as it happens; `event: end` once the deployment is terminal and every line was sent, then the stream closes. Log events carry ' +
          '`id: <seq>` (the line number): reconnect with `Last-Event-ID` (EventSource does it) or `?after=<seq>` to continue after that line ' +
          'with nothing lost or repeated. A comment line comes every 15 s. At most SSE_MAX_STREAMS_PER_TOKEN streams per token across all API replicas (429 beyond) ' +
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
      const record = await adapters.store.get(ref);
      if (record === null) throw new DeployError('NOT_FOUND', `Deployment ${ref.deploymentId} not found`);
      const place = await openStream(request.orgId, request.headers.authorization);
      // The record read here stays in no stream: the watch's copy is the one its streams share.
      const watch = deploymentWatches.get(`${ref.orgId}\n${ref.deploymentId}`);
      watch.seed(record);
      new DeploymentStream(new SseChannel(reply), request.log, place, watch, ref.deploymentId, after).wake();
    },
  );

  app.get(
    '/events',
    {
      childLoggerFactory: LazyChildLogger.factory,
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
      const place = await openStream(request.orgId, request.headers.authorization);
      const stream = new OrgStream(new SseChannel(reply), request.log, place, orgWatches.get(request.orgId));
      await stream.start().catch((error: unknown) => {
        request.log.warn({ err: error }, 'event stream stopped on an error');
        stream.channel.end();
      });
    },
  );
};
