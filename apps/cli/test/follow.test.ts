import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient } from '../src/api.ts';
import type { FollowEvent } from '../src/follow.ts';
import { follow } from '../src/follow.ts';

const ID = 'dep_abcdefghijklmnopqrstuvwxyz';
const status = (value: string, currentStep: string | null) => ({ deploymentId: ID, projectId: 'p', environment: 'development', status: value, currentStep, progress: 0, attempt: 1, url: null, error: null, errorCode: null });
const line = (seq: number) => ({ seq, timestamp: '2026-12-06T00:00:00.000Z', step: 'build', level: 'info', message: `line ${seq}` });

let server: Server | null = null;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server === null ? resolve() : server.close(() => resolve())));
  server = null;
});

async function serve(handler: (request: IncomingMessage, response: ServerResponse) => void): Promise<ApiClient> {
  server = createServer(handler);
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  return new ApiClient({ apiUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: 't' });
}

describe('follow', () => {
  it('reads the event stream (issue 13 format), resumes after a dropped connection with Last-Event-ID, and reports each line once', async () => {
    const resumedFrom: (string | undefined)[] = [];
    const api = await serve((request, response) => {
      expect(request.url).toBe(`/deploy/${ID}/events`);
      expect(request.headers.authorization).toBe('Bearer t');
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      const last = request.headers['last-event-id'] as string | undefined;
      resumedFrom.push(last);
      if (last === undefined) {
        // First connection: status, two lines (one split across writes, CRLF line ends), a comment, then the server drops it.
        response.write(`: connected\n\nevent: status\ndata: ${JSON.stringify(status('in_progress', 'build'))}\n\n`);
        response.write(`event: log\nid: 1\ndata: ${JSON.stringify(line(1))}\n\nevent: log\r\nid: 2\r\n`);
        response.write(`data: ${JSON.stringify(line(2))}\r\n\r\n`);
        setTimeout(() => response.destroy(), 20);
        return;
      }
      response.write(`event: log\nid: 3\ndata: ${JSON.stringify(line(3))}\n\n`);
      // As apps/api/src/routes/events.ts sends them: the terminal view as a status event, then `end`.
      response.write(`event: status\ndata: ${JSON.stringify(status('completed', null))}\n\n`);
      response.end(`event: end\ndata: ${JSON.stringify({ deploymentId: ID, status: 'completed', reason: 'terminal' })}\n\n`);
    });
    const events: FollowEvent[] = [];
    const result = await follow(api, ID, (event) => events.push(event), Date.now() + 30_000);
    expect(result).toMatchObject({ timedOut: false, status: { status: 'completed' } });
    expect(resumedFrom).toEqual([undefined, '2']);
    expect(events.filter((event) => event.type === 'log').map((event) => (event.type === 'log' ? event.line.message : ''))).toEqual(['line 1', 'line 2', 'line 3']);
    expect(events.filter((event) => event.type === 'status').map((event) => (event.type === 'status' ? event.status.status : ''))).toEqual(['in_progress', 'completed']);
  });

  it('polls status and logs on a service without an event stream, reporting new lines only', async () => {
    let polls = 0;
    const api = await serve((request, response) => {
      response.setHeader('content-type', 'application/json');
      if (request.url?.endsWith('/events')) {
        response.statusCode = 404;
        response.end(JSON.stringify({ success: false, error: 'NOT_FOUND', message: `No route GET ${request.url}` }));
      } else if (request.url?.endsWith('/status')) {
        polls++;
        response.end(JSON.stringify(polls < 2 ? status('in_progress', 'build') : status('completed', null)));
      } else {
        response.end(JSON.stringify({ deploymentId: ID, logs: [line(1), line(2), line(3)].slice(0, polls + 1) }));
      }
    });
    const events: FollowEvent[] = [];
    const result = await follow(api, ID, (event) => events.push(event), Date.now() + 30_000);
    expect(result.status.status).toBe('completed');
    expect(events.filter((event) => event.type === 'log')).toHaveLength(3);
  });

  it('stops at the deadline with the last status seen', async () => {
    const api = await serve((request, response) => {
      response.writeHead(200, { 'content-type': request.url?.endsWith('/events') ? 'text/event-stream' : 'application/json' });
      if (request.url?.endsWith('/events')) response.write(`event: status\ndata: ${JSON.stringify(status('in_progress', 'build'))}\n\n`);
      else if (request.url?.endsWith('/status')) response.end(JSON.stringify(status('in_progress', 'build')));
      else response.end(JSON.stringify({ deploymentId: ID, logs: [] }));
    });
    const result = await follow(api, ID, () => undefined, Date.now() + 300);
    expect(result).toMatchObject({ timedOut: true, status: { status: 'in_progress' } });
  });
});
