import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import type { FastifyBaseLogger, FastifyReply } from 'fastify';
import type { Bindings, ChildLoggerOptions } from 'pino';
import type { StreamLeaseStore } from '@zepid/core';
import { sha256Hex } from '@zepid/core';

/** A comment line this often keeps proxies and load balancers from closing an idle stream. */
export const HEARTBEAT_MS = 15_000;
/** The heartbeat, one constant string: 1,000 idle streams make no new string each time. */
const KEEP_ALIVE = ': keep-alive\n\n';
/** The channel of a response, on the response itself: its 'close' listener is one shared function, not a closure per stream. */
const CHANNEL = Symbol('sseChannel');
type ChannelResponse = ServerResponse & { [CHANNEL]?: SseChannel };

/** A response's 'close' listener, one function for every channel (`this` is the response). */
function responseClosed(this: ChannelResponse): void {
  this[CHANNEL]?.close();
}

/**
 * Node's HTTP server keeps an HTTP parser on every connection for the next request on it: ~10 KB of
 * native memory each (heaptrack: `node::http_parser::Parser::New`), held for an SSE stream's whole
 * life although its client sends nothing more. A stream's connection gives its parser back to Node's
 * pool right after the request, as Node's own server does for an upgraded connection (its
 * `'upgrade'` path: remove the server's 'data' and 'end' listeners, then `freeParser`), and closes
 * when the stream ends (`Connection: close`). `node:_http_common` is Node's legacy module that
 * exports `freeParser`; where it or the listeners are not as expected, the parser simply stays.
 * 1,000 idle streams: −5.6 MB of RSS in a bare Node server (BENCHMARKS.md).
 */
const httpCommon = createRequire(import.meta.url)('node:_http_common') as { freeParser?: unknown };
type FreeParser = (parser: unknown, request: IncomingMessage, socket: Socket) => void;
const freeParser: FreeParser | null = typeof httpCommon.freeParser === 'function' ? (httpCommon.freeParser as FreeParser) : null;
type ParsedSocket = Socket & { parser?: unknown };

/** The server's own listeners on a connection that feed its parser, if they are exactly as Node's server adds them. */
function parserListeners(socket: ParsedSocket): { onData: (...args: unknown[]) => void; onEnd: (...args: unknown[]) => void } | null {
  const onData = socket.listeners('data').filter((listener) => listener.name === 'bound socketOnData');
  const onEnd = socket.listeners('end').filter((listener) => listener.name === 'bound socketOnEnd');
  if (onData.length !== 1 || onEnd.length !== 1) return null;
  return { onData: onData[0] as (...args: unknown[]) => void, onEnd: onEnd[0] as (...args: unknown[]) => void };
}

/** Gives a finished request's parser back to Node (see above); false when it cannot, and the connection stays as it is. */
function releaseParser(request: IncomingMessage): boolean {
  const socket = request.socket as ParsedSocket;
  if (freeParser === null || !request.complete || socket.parser === undefined || socket.parser === null || socket.destroyed) return false;
  const listeners = parserListeners(socket);
  if (listeners === null) return false;
  socket.removeListener('data', listeners.onData);
  socket.removeListener('end', listeners.onEnd);
  // The server's 'end' listener closed the connection when the client ended its side; this one does.
  socket.once('end', clientEnded);
  freeParser(socket.parser, request, socket);
  return true;
}

function clientEnded(this: Socket): void {
  this.destroy();
}

/** Told once when a channel closes: an object with a method, so a stream registers itself instead of a closure. */
export interface ClosedListener {
  channelClosed(): void;
}

/**
 * One Server-Sent Events response on the API's own HTTP connection: `text/event-stream`, no caching,
 * no proxy buffering (nginx reads `X-Accel-Buffering`). Writes wait for the socket to drain, so a
 * slow client holds its own events back instead of growing this process's memory.
 *
 * Kept small on purpose (1,000 idle streams per replica are the target, BENCHMARKS.md): a closed flag
 * and one listener object instead of an AbortController and closures (the response's 'close' runs a
 * function shared by every channel), Nagle's algorithm off (each event is one write that should
 * leave at once), no timer of its own (StreamQuota's one timer sends every stream's heartbeat).
 */
export class SseChannel {
  private readonly raw: ServerResponse;
  private closed = false;
  private lastWriteAt = Date.now();
  /** Resolves the write waiting for `drain` (at most one: a stream's writes are sequential). */
  private unblock: (() => void) | null = null;
  private listener: ClosedListener | null = null;

  constructor(reply: FastifyReply) {
    this.raw = reply.raw;
    reply.hijack();
    const request = reply.request.raw;
    // Without its parser the connection cannot carry another request: it closes with the stream.
    const detach = freeParser !== null && request.complete && parserListeners(request.socket) !== null;
    this.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
      connection: detach ? 'close' : 'keep-alive',
      'x-request-id': String(reply.request.id),
    });
    this.raw.flushHeaders();
    this.raw.socket?.setNoDelay(true);
    if (detach) releaseParser(request);
    // The response's 'close' comes when the client goes away as well as after `end`; a client gone
    // before this (while its stream's lease was taken) had its 'close' already: closed at once, so
    // the stream's releases (its lease, its place) run.
    if (this.raw.destroyed || reply.request.raw.socket.destroyed) this.close();
    else {
      (this.raw as ChannelResponse)[CHANNEL] = this;
      this.raw.on('close', responseClosed);
    }
  }

  get open(): boolean {
    return !this.closed;
  }

  /** `listener` is told once, when the client went away or the stream was ended (at once if that already happened). */
  whenClosed(listener: ClosedListener): void {
    if (this.closed) listener.channelClosed();
    else this.listener = listener;
  }

  /** Whether nothing was written for `everyMs` (`now` in ms). */
  heartbeatDue(now: number, everyMs: number): boolean {
    return now - this.lastWriteAt >= everyMs;
  }

  async send(event: string, data: unknown, id?: number | string): Promise<void> {
    await this.sendJson(event, JSON.stringify(data), id);
  }

  /** `send` with the data already serialized (a status view shared by every follower of a deployment). */
  async sendJson(event: string, json: string, id?: number | string): Promise<void> {
    await this.write(`${id === undefined ? '' : `id: ${id}\n`}event: ${event}\ndata: ${json}\n\n`);
  }

  /**
   * A comment line: ignored by EventSource, seen by proxies as traffic. Skipped while the socket
   * has not drained (a stuck client gets no pile of heartbeats).
   */
  heartbeat(): void {
    if (this.raw.writableNeedDrain) return;
    void this.write(KEEP_ALIVE);
  }

  end(): void {
    if (!this.raw.writableEnded) this.raw.end();
    this.close();
  }

  /** Marks the channel closed (its response closed, or it ended) and tells its listener, once. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unblock?.();
    const raw = this.raw as ChannelResponse;
    if (raw[CHANNEL] === this) raw[CHANNEL] = undefined;
    const listener = this.listener;
    this.listener = null;
    listener?.channelClosed();
  }

  private async write(text: string): Promise<void> {
    if (this.closed || this.raw.writableEnded) return;
    this.lastWriteAt = Date.now();
    if (this.raw.write(text)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.raw.off('drain', done);
        this.unblock = null;
        resolve();
      };
      this.unblock = done;
      this.raw.on('drain', done);
    });
  }
}

/**
 * The request logger of a stream's route (Fastify's `childLoggerFactory`): a pino child costs ~1.5 KB
 * (a bound function per level), held for the stream's whole life by Fastify's request, while an idle
 * stream logs nothing. This one makes the child on its first use.
 */
export class LazyChildLogger {
  private readonly parent: FastifyBaseLogger;
  private readonly bindings: Bindings;
  private readonly options: ChildLoggerOptions;
  private made: FastifyBaseLogger | null = null;

  constructor(parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions) {
    this.parent = parent;
    this.bindings = bindings;
    this.options = options;
  }

  private get real(): FastifyBaseLogger {
    this.made ??= this.parent.child(this.bindings, this.options);
    return this.made;
  }

  get level(): string {
    return this.made?.level ?? this.parent.level;
  }

  set level(level: string) {
    this.real.level = level;
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.real.child(bindings, options);
  }

  // Methods on the prototype, not arrow fields: no closures per stream.
  fatal(...args: unknown[]): void {
    const logger = this.real;
    Reflect.apply(logger.fatal, logger, args);
  }

  error(...args: unknown[]): void {
    const logger = this.real;
    Reflect.apply(logger.error, logger, args);
  }

  warn(...args: unknown[]): void {
    const logger = this.real;
    Reflect.apply(logger.warn, logger, args);
  }

  info(...args: unknown[]): void {
    const logger = this.real;
    Reflect.apply(logger.info, logger, args);
  }

  debug(...args: unknown[]): void {
    const logger = this.real;
    Reflect.apply(logger.debug, logger, args);
  }

  trace(...args: unknown[]): void {
    const logger = this.real;
    Reflect.apply(logger.trace, logger, args);
  }

  silent(): void {}

  /** Fastify's `childLoggerFactory` for a stream's route. */
  static factory(this: void, parent: FastifyBaseLogger, bindings: Bindings, options: ChildLoggerOptions): FastifyBaseLogger {
    return new LazyChildLogger(parent, bindings, options);
  }
}

/** A token's leases held by this process (one object per org and token, shared by its streams). */
interface LeaseGroup {
  readonly name: string;
  readonly orgId: string;
  readonly key: string;
  readonly ids: Set<string>;
}

/** One stream's place: its lease, in its token's group. Released once, by `StreamQuota.release`. */
export interface StreamPlace {
  readonly group: LeaseGroup;
  readonly id: string;
}

/** How long a stream lease lives without its replica's renewal (SSE_LEASE_TTL_MS): a crashed replica's streams stop counting after this. */
export const DEFAULT_LEASE_TTL_MS = 60_000;

/**
 * Open streams: at most `maxPerToken` per token across every API replica (429 beyond: counted by
 * the store's stream leases, keyed by the token's hash, never the token) and `maxTotal` in this
 * process (503 beyond: the replica's memory budget; a client retries, or a load balancer sends it
 * to another replica). This process renews its leases every third of their lifetime (one renewal
 * per token, whatever its number of streams). It also keeps every stream alive with one shared
 * timer: a comment line on each stream that wrote nothing for 15 s, instead of a timer per stream.
 */
export class StreamQuota {
  private readonly maxPerToken: number;
  private readonly maxTotal: number;
  private readonly leases: StreamLeaseStore;
  private readonly leaseTtlMs: number;
  private readonly logger: FastifyBaseLogger;
  /** This process's leases, by org and token hash. */
  private readonly held = new Map<string, LeaseGroup>();
  private readonly releasing = new Set<Promise<void>>();
  private readonly channels = new Set<SseChannel>();
  private readonly heartbeatMs: number;
  private total = 0;
  private ticker: NodeJS.Timeout | null = null;
  private renewer: NodeJS.Timeout | null = null;

  constructor(options: {
    maxPerToken: number;
    maxTotal?: number;
    leases: StreamLeaseStore;
    leaseTtlMs?: number;
    heartbeatMs?: number;
    logger: FastifyBaseLogger;
  }) {
    this.maxPerToken = options.maxPerToken;
    this.maxTotal = options.maxTotal ?? Number.POSITIVE_INFINITY;
    this.leases = options.leases;
    this.leaseTtlMs = options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    this.heartbeatMs = options.heartbeatMs ?? HEARTBEAT_MS;
    this.logger = options.logger;
  }

  get limit(): number {
    return this.maxPerToken;
  }

  get totalLimit(): number {
    return this.maxTotal;
  }

  /** Streams open in this process. */
  get size(): number {
    return this.total;
  }

  /**
   * A place for one more stream, or which cap refused it: the token's across replicas (`token`) or
   * this replica's (`replica`). Throws when the store cannot be asked (503 DEPENDENCY_UNAVAILABLE).
   * The stream gives it back with `release` when it ends.
   */
  async acquire(orgId: string, authorization: string | undefined): Promise<StreamPlace | 'token' | 'replica'> {
    if (this.total >= this.maxTotal) return 'replica';
    // The place is this process's from now: two requests cannot both take the last one while the store answers.
    this.total += 1;
    const key = sha256Hex(authorization ?? '');
    let id: string | null;
    try {
      id = await this.leases.acquire(orgId, key, this.maxPerToken, this.leaseTtlMs, new Date());
    } catch (error) {
      this.total -= 1;
      throw error;
    }
    if (id === null) {
      this.total -= 1;
      return 'token';
    }
    const name = `${orgId}\n${key}`;
    let group = this.held.get(name);
    if (group === undefined) {
      group = { name, orgId, key, ids: new Set() };
      this.held.set(name, group);
    }
    group.ids.add(id);
    this.startRenewing();
    return { group, id };
  }

  /** Gives a stream's place back (again: nothing); its lease is deleted in the background. */
  release(place: StreamPlace): void {
    const { group, id } = place;
    if (!group.ids.delete(id)) return;
    this.total -= 1;
    if (group.ids.size === 0 && this.held.get(group.name) === group) this.held.delete(group.name);
    if (this.held.size === 0) this.stopRenewing();
    // Not awaited by the stream; if it fails, the lease expires on its own.
    const release = this.leases
      .release(group.orgId, group.key, id)
      .catch((error: unknown) => this.logger.warn({ err: error }, 'stream lease not released; it expires on its own'))
      .finally(() => this.releasing.delete(release));
    this.releasing.add(release);
  }

  private startRenewing(): void {
    if (this.renewer !== null) return;
    this.renewer = setInterval(() => void this.renew(), Math.max(100, Math.floor(this.leaseTtlMs / 3)));
    this.renewer.unref();
  }

  private stopRenewing(): void {
    if (this.renewer !== null) clearInterval(this.renewer);
    this.renewer = null;
  }

  private async renew(): Promise<void> {
    const now = new Date();
    for (const { orgId, key, ids } of [...this.held.values()]) {
      try {
        await this.leases.renew(orgId, key, [...ids], this.leaseTtlMs, now);
      } catch (error) {
        this.logger.warn({ err: error }, 'stream leases not renewed; trying again at the next renewal');
      }
    }
  }

  /** Keeps `channel` alive (its heartbeat) until `untrack`. */
  track(channel: SseChannel): void {
    this.channels.add(channel);
    if (this.ticker === null) {
      // A second's lateness on a 15 s heartbeat is nothing to a proxy; one timer for every stream.
      this.ticker = setInterval(() => this.beat(), Math.min(1000, Math.ceil(this.heartbeatMs / 3)));
      this.ticker.unref();
    }
  }

  untrack(channel: SseChannel): void {
    this.channels.delete(channel);
    if (this.channels.size === 0) this.stopTicker();
  }

  private beat(): void {
    const now = Date.now();
    for (const channel of this.channels) if (channel.open && channel.heartbeatDue(now, this.heartbeatMs)) channel.heartbeat();
  }

  private stopTicker(): void {
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
  }

  /** Ends every open stream (the server is closing; clients reconnect to another replica) and waits for their leases' release. */
  async endAll(): Promise<void> {
    for (const channel of [...this.channels]) channel.end();
    this.channels.clear();
    this.stopTicker();
    this.stopRenewing();
    await Promise.all([...this.releasing]);
  }
}
