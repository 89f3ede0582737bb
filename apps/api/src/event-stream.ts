import type { ServerResponse } from 'node:http';
import type { FastifyReply } from 'fastify';
import { sha256Hex } from '@zepid/core';

/** A comment line this often keeps proxies and load balancers from closing an idle stream. */
export const HEARTBEAT_MS = 15_000;

/**
 * One Server-Sent Events response on the API's own HTTP connection: `text/event-stream`, no caching,
 * no proxy buffering (nginx reads `X-Accel-Buffering`). Writes wait for the socket to drain, so a
 * slow client holds its own events back instead of growing this process's memory.
 */
export class SseChannel {
  private readonly raw: ServerResponse;
  private readonly controller = new AbortController();
  private lastWriteAt = Date.now();

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
    const closed = () => this.controller.abort();
    this.raw.on('close', closed);
    reply.request.raw.on('close', closed);
  }

  /** Aborted once the client went away or the stream was ended. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get open(): boolean {
    return !this.controller.signal.aborted;
  }

  /** Milliseconds until the next heartbeat is due. */
  heartbeatDueIn(): number {
    return Math.max(0, this.lastWriteAt + HEARTBEAT_MS - Date.now());
  }

  async send(event: string, data: unknown, id?: number | string): Promise<void> {
    const lines = `${id === undefined ? '' : `id: ${id}\n`}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    await this.write(lines);
  }

  /** A comment line: ignored by EventSource, seen by proxies as traffic. */
  async heartbeat(): Promise<void> {
    await this.write(`: keep-alive ${new Date().toISOString()}\n\n`);
  }

  end(): void {
    if (!this.raw.writableEnded) this.raw.end();
    this.controller.abort();
  }

  private async write(text: string): Promise<void> {
    if (!this.open || this.raw.writableEnded) return;
    this.lastWriteAt = Date.now();
    if (this.raw.write(text)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.raw.off('drain', done);
        this.signal.removeEventListener('abort', done);
        resolve();
      };
      this.raw.on('drain', done);
      this.signal.addEventListener('abort', done, { once: true });
    });
  }
}

/**
 * Open streams per token in this process. The cap bounds what one token can hold open on a replica
 * (each stream costs a socket and a read per change); the key is the token's hash, never the token.
 */
export class StreamQuota {
  private readonly max: number;
  private readonly open = new Map<string, number>();
  private readonly channels = new Set<SseChannel>();

  constructor(max: number) {
    this.max = max;
  }

  get limit(): number {
    return this.max;
  }

  /** A release function, or null when the token already holds `max` streams here. */
  acquire(authorization: string | undefined): (() => void) | null {
    const key = sha256Hex(authorization ?? '');
    const count = this.open.get(key) ?? 0;
    if (count >= this.max) return null;
    this.open.set(key, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.open.get(key) ?? 1) - 1;
      if (left <= 0) this.open.delete(key);
      else this.open.set(key, left);
    };
  }

  track(channel: SseChannel): () => void {
    this.channels.add(channel);
    return () => this.channels.delete(channel);
  }

  /** Ends every open stream (the server is closing; clients reconnect to another replica). */
  endAll(): void {
    for (const channel of this.channels) channel.end();
    this.channels.clear();
  }
}
