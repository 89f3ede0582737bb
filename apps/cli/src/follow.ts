import { setTimeout as sleep } from 'node:timers/promises';
import type { ApiClient, DeploymentStatus, LogLine } from './api.ts';
import { ApiError } from './errors.ts';

export const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'superseded']);

export type FollowEvent =
  | { type: 'status'; status: DeploymentStatus }
  | { type: 'log'; line: LogLine };

export interface FollowResult {
  /** The last status seen: terminal unless the deadline passed first. */
  status: DeploymentStatus;
  timedOut: boolean;
}

interface SseMessage {
  event: string;
  id: string | null;
  data: string;
}

/** Splits a `text/event-stream` body into messages (the WHATWG parsing rules for the fields used). */
async function* sseMessages(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const decoder = new TextDecoder();
  let buffer = '';
  let message: SseMessage = { event: 'message', id: null, data: '' };
  let hasData = false;
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
      if (line === '') {
        if (hasData) yield message;
        message = { event: 'message', id: null, data: '' };
        hasData = false;
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') message.event = value;
      else if (field === 'id') message.id = value;
      else if (field === 'data') {
        message.data = hasData ? `${message.data}\n${value}` : value;
        hasData = true;
      }
    }
  }
}

/**
 * Follows a deployment until it ends or the deadline passes: from its live event stream
 * (`GET /deploy/:id/events`, resumed with `Last-Event-ID` after a dropped connection), or, on a
 * service without one, by polling status and logs once a second. Each log line is reported once.
 */
export async function follow(api: ApiClient, id: string, onEvent: (event: FollowEvent) => void, deadline: number): Promise<FollowResult> {
  let last: DeploymentStatus | null = null;
  let lastSeq: string | null = null;
  let linesSeen = 0;
  const emitStatus = (status: DeploymentStatus): void => {
    last = status;
    onEvent({ type: 'status', status });
  };

  let streamFailures = 0;
  while (Date.now() < deadline && streamFailures < 5) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), Math.max(0, deadline - Date.now()));
    try {
      const headers = api.headers({ accept: 'text/event-stream' });
      if (lastSeq !== null) headers['last-event-id'] = lastSeq;
      const response = await fetch(api.url(`/deploy/${encodeURIComponent(id)}/events`), { headers, signal: controller.signal });
      if (response.status === 404 || response.status === 405 || response.status === 406) {
        // 404 for an unknown deployment too: the poll below tells which by asking for its status.
        await response.body?.cancel();
        break;
      }
      if (!response.ok || response.body === null) {
        const text = await response.text();
        let shape: { error?: string; message?: string } = {};
        try {
          shape = JSON.parse(text) as typeof shape;
        } catch {
          // not the documented shape
        }
        throw new ApiError(response.status, shape.error ?? `HTTP_${response.status}`, shape.message ?? `event stream answered ${response.status}`);
      }
      for await (const message of sseMessages(response.body)) {
        if (message.id !== null) lastSeq = message.id;
        if (message.event === 'status') {
          emitStatus(JSON.parse(message.data) as DeploymentStatus);
        } else if (message.event === 'end') {
          // `end` says only that the stream is over ({deploymentId, status, reason}): the terminal status
          // view came as the last `status` event; read it when it did not (a deployment deleted meanwhile).
          // (`last` is set by emitStatus; TypeScript cannot see assignments made in a callback.)
          const seen = last as DeploymentStatus | null;
          const final = seen !== null && TERMINAL.has(seen.status) ? seen : await api.status(id);
          if (final !== seen) emitStatus(final);
          return { status: final, timedOut: false };
        } else if (message.event === 'log') {
          linesSeen++;
          onEvent({ type: 'log', line: JSON.parse(message.data) as LogLine });
        }
      }
      streamFailures++; // the server closed the stream before `end`: reconnect where it stopped
    } catch (error) {
      if (error instanceof ApiError && error.status !== 429 && error.status < 500) throw error;
      if (controller.signal.aborted) break;
      streamFailures++;
      await sleep(Math.min(1000 * streamFailures, 5000));
    } finally {
      clearTimeout(timer);
    }
  }

  // Polling: status and the log once a second.
  for (;;) {
    const status = await api.status(id);
    if (last === null || status.status !== last.status || status.currentStep !== last.currentStep || status.progress !== last.progress) emitStatus(status);
    else last = status;
    const lines = await api.logs(id);
    for (const line of lines.slice(linesSeen)) onEvent({ type: 'log', line });
    linesSeen = Math.max(linesSeen, lines.length);
    if (TERMINAL.has(status.status)) return { status, timedOut: false };
    if (Date.now() >= deadline) return { status, timedOut: true };
    await sleep(Math.min(1000, Math.max(0, deadline - Date.now())));
  }
}
