import type { ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyReply } from 'fastify';
import type { Bindings, ChildLoggerOptions } from 'pino';
import { sha256Hex } from '@zepid/core';

/** A comment line this often keeps proxies and load balancers from closing an idle stream. */
export const HEARTBEAT_MS = 15_000;
/** The heartbeat, one constant string: 1,000 idle streams make no new string each time. */
const KEEP_ALIVE = ': keep-alive\n\n';

/**
 * One Server-Sent Events response on the API's own HTTP connection: `text/event-stream`, no caching,
 * no proxy buffering (nginx reads `X-Accel-Buffering`). Writes wait for the socket to drain, so a
 * slow client holds its own events back instead of growing this process's memory.
 *
 * Kept small on purpose (1,000 idle streams per replica are the target, BENCHMARKS.md): a closed flag
 * and one close callback instead of an AbortController and listeners, Nagle's algorithm off (each
 * event is one write that should leave at once), no timer of its own (StreamQuota's one timer
 * sends every stream's heartbeat).
 */
export class SseChannel {
  private readonly raw: ServerResponse;
  private closed = false;
  private lastWriteAt = Date.now();
  /** Resolves the write waiting for `drain` (at most one: a stream's writes are sequential). */
  private unblock: (() => void) | null = null;
  private onClose: (() => void) | null = null;

  constructor(reply: FastifyReply) {
    this.raw = reply.raw;
    reply.hijack();
    this.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
      connection: 'keep-alive',
      'x-request-id': String(reply.request.id),
    });
    this.raw.flushHeaders();
    this.raw.socket?.setNoDelay(true);
    // The response's 'close' comes when the client goes away as well as after `end`.
    this.raw.once('close', () => this.close());
  }

  get open(): boolean {
    return !this.closed;
  }

  /** `callback` runs once, when the client went away or the stream was ended. */
  whenClosed(callback: () => void): void {
    if (this.closed) callback();
    else this.onClose = callback;
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

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unblock?.();
    const callback = this.onClose;
    this.onClose = null;
    callback?.();
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

/**
 * Open streams in this process: at most `maxPerToken` per token (429 beyond; the key is the token's
 * hash, never the token) and `maxTotal` in all (503 beyond: the replica's memory budget; a client
 * retries, or a load balancer sends it to another replica). It also keeps every stream alive with
 * one shared timer: a comment line on each stream that wrote nothing for 15 s, instead of a timer
 * per stream.
 */
export class StreamQuota {
  private readonly maxPerToken: number;
  private readonly maxTotal: number;
  private readonly open = new Map<string, number>();
  private readonly channels = new Set<SseChannel>();
  private readonly heartbeatMs: number;
  private total = 0;
  private ticker: NodeJS.Timeout | null = null;

  constructor(maxPerToken: number, maxTotal: number = Number.POSITIVE_INFINITY, heartbeatMs: number = HEARTBEAT_MS) {
    this.maxPerToken = maxPerToken;
    this.maxTotal = maxTotal;
    this.heartbeatMs = heartbeatMs;
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

  /** A release function, or which cap refused it: the token's (`token`) or the replica's (`replica`). */
  acquire(authorization: string | undefined): (() => void) | 'token' | 'replica' {
    if (this.total >= this.maxTotal) return 'replica';
    const key = sha256Hex(authorization ?? '');
    const count = this.open.get(key) ?? 0;
    if (count >= this.maxPerToken) return 'token';
    this.open.set(key, count + 1);
    this.total += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total -= 1;
      const left = (this.open.get(key) ?? 1) - 1;
      if (left <= 0) this.open.delete(key);
      else this.open.set(key, left);
    };
  }

  track(channel: SseChannel): () => void {
    this.channels.add(channel);
    if (this.ticker === null) {
      // A second's lateness on a 15 s heartbeat is nothing to a proxy; one timer for every stream.
      this.ticker = setInterval(() => this.beat(), Math.min(1000, Math.ceil(this.heartbeatMs / 3)));
      this.ticker.unref();
    }
    return () => {
      this.channels.delete(channel);
      if (this.channels.size === 0) this.stopTicker();
    };
  }

  private beat(): void {
    const now = Date.now();
    for (const channel of this.channels) if (channel.open && channel.heartbeatDue(now, this.heartbeatMs)) channel.heartbeat();
  }

  private stopTicker(): void {
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
  }

  /** Ends every open stream (the server is closing; clients reconnect to another replica). */
  endAll(): void {
    for (const channel of this.channels) channel.end();
    this.channels.clear();
    this.stopTicker();
  }
}
