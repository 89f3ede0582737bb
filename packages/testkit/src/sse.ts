import { request } from 'node:http';
import type { IncomingMessage } from 'node:http';

/** One parsed Server-Sent Event. */
export interface SseEvent {
  event: string;
  data: string;
  id: string | null;
  /** performance.now() when its last line arrived. */
  receivedAt: number;
}

/**
 * A minimal `text/event-stream` client over node:http (what a browser's EventSource does, without
 * reconnecting): events are parsed as they arrive and handed out in order by `next`.
 */
export class SseClient {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  /** Comment lines seen (heartbeats). */
  comments = 0;
  ended = false;
  private readonly response: IncomingMessage;
  private readonly queue: SseEvent[] = [];
  private waiter: (() => void) | null = null;
  private buffer = '';
  private current: { event: string; data: string[]; id: string | null } = { event: 'message', data: [], id: null };
  /** The body, when the answer was not a stream (an error). */
  body = '';

  private constructor(response: IncomingMessage) {
    this.response = response;
    this.status = response.statusCode ?? 0;
    this.headers = response.headers;
    response.setEncoding('utf8');
    response.on('data', (chunk: string) => {
      if (this.status !== 200) {
        this.body += chunk;
        return;
      }
      this.buffer += chunk;
      let newline: number;
      while ((newline = this.buffer.indexOf('\n')) >= 0) {
        this.line(this.buffer.slice(0, newline).replace(/\r$/, ''));
        this.buffer = this.buffer.slice(newline + 1);
      }
    });
    const finish = () => {
      this.ended = true;
      this.wake();
    };
    response.on('end', finish);
    response.on('close', finish);
    response.on('error', finish);
  }

  static open(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
    return new Promise((resolve, reject) => {
      const req = request(url, { headers: { accept: 'text/event-stream', ...headers } }, (response) => resolve(new SseClient(response)));
      req.on('error', reject);
      req.end();
    });
  }

  /** The next event, or null if the stream ended first; rejects after `timeoutMs`. */
  async next(timeoutMs = 10_000): Promise<SseEvent | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const event = this.queue.shift();
      if (event !== undefined) return event;
      if (this.ended) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no event within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
  }

  /** Events until one named `name` (included), or the end of the stream. */
  async until(name: string, timeoutMs = 10_000): Promise<SseEvent[]> {
    const events: SseEvent[] = [];
    for (;;) {
      const event = await this.next(timeoutMs);
      if (event === null) return events;
      events.push(event);
      if (event.event === name) return events;
    }
  }

  /** Waits for the server to close the stream; rejects after `timeoutMs`. */
  async closed(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      if (Date.now() > deadline) throw new Error(`stream still open after ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = null;
    }
  }

  close(): void {
    this.response.destroy();
  }

  private line(line: string): void {
    if (line === '') {
      if (this.current.data.length > 0) {
        this.queue.push({ event: this.current.event, data: this.current.data.join('\n'), id: this.current.id, receivedAt: performance.now() });
        this.wake();
      }
      this.current = { event: 'message', data: [], id: null };
      return;
    }
    if (line.startsWith(':')) {
      this.comments += 1;
      return;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') this.current.event = value;
    else if (field === 'data') this.current.data.push(value);
    else if (field === 'id') this.current.id = value;
  }

  private wake(): void {
    this.waiter?.();
  }
}
