import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type { FastifyReply } from 'fastify';
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { LazyChildLogger, SseChannel } from '../src/event-stream.ts';

describe('LazyChildLogger (the request logger of stream routes)', () => {
  const capture = () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    return { lines, parent: pino({ level: 'info', base: { service: 'api' } }, sink) };
  };

  it('makes the pino child on its first use only, with the request bindings, and logs as the child would', () => {
    const { lines, parent } = capture();
    const child = vi.spyOn(parent, 'child');
    const logger = LazyChildLogger.factory(parent, { requestId: 'req-1' }, {});
    expect(child).not.toHaveBeenCalled();
    expect(logger.level).toBe('info');
    logger.debug('not at this level');
    logger.info({ statusCode: 200 }, 'request completed');
    logger.warn('stream stopped');
    expect(child).toHaveBeenCalledTimes(1);
    expect(lines.map((line) => [line.level, line.msg, line.requestId, line.service, line.statusCode])).toEqual([
      [30, 'request completed', 'req-1', 'api', 200],
      [40, 'stream stopped', 'req-1', 'api', undefined],
    ]);
  });
});

describe('SseChannel', () => {
  it('is closed at once when the client went away before the stream opened (its releases run: no lease is held forever)', async () => {
    const { createServer, request: httpRequest } = await import('node:http');
    let closedOnOpen: boolean | null = null;
    let released = false;
    const server = createServer((request, response) => {
      // The client has gone by the time the route opens its stream (as while its lease was being taken).
      request.socket.destroy();
      setImmediate(() => {
        const reply = { raw: response, hijack: () => undefined, request: { id: 'req-1', raw: request } };
        const channel = new SseChannel(reply as unknown as FastifyReply);
        closedOnOpen = !channel.open;
        channel.whenClosed({ channelClosed: () => (released = true) });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((resolve) => httpRequest({ port, host: '127.0.0.1', path: '/' }).on('error', () => resolve()).end());
    await vi.waitFor(() => expect(closedOnOpen).not.toBeNull());
    expect(closedOnOpen).toBe(true);
    expect(released).toBe(true);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("gives the connection's HTTP parser back to Node once the request is read: events still flow, the client ending its side closes the stream, the stream ending closes the connection", async () => {
    const { createServer } = await import('node:http');
    const { connect } = await import('node:net');
    const channels: SseChannel[] = [];
    const parsers: unknown[] = [];
    const closed: number[] = [];
    const server = createServer((request, response) => {
      // As the routes do: the stream opens after the request was read (they await the store first).
      setImmediate(() => {
        const reply = { raw: response, hijack: () => undefined, request: { id: `req-${channels.length}`, raw: request } };
        const channel = new SseChannel(reply as unknown as FastifyReply);
        const index = channels.length;
        channels.push(channel);
        parsers.push((request.socket as { parser?: unknown }).parser);
        channel.whenClosed({ channelClosed: () => closed.push(index) });
        void channel.send('status', { index });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const open = async () => {
      const socket = connect(port, '127.0.0.1');
      let text = '';
      let ended = false;
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (text += chunk));
      socket.on('end', () => (ended = true));
      socket.on('error', () => undefined);
      socket.write('GET /events HTTP/1.1\r\nHost: test\r\n\r\n');
      await vi.waitFor(() => expect(text).toContain('event: status'));
      return { socket, text: () => text, ended: () => ended };
    };

    const first = await open();
    expect(first.text()).toMatch(/\r\nconnection: close\r\n/i);
    expect(parsers[0]).toBeNull(); // given back: the socket no longer holds one
    // The stream still writes after its parser went; then its end closes the connection.
    await channels[0]?.send('log', { seq: 1 }, 1);
    await vi.waitFor(() => expect(first.text()).toContain('id: 1\nevent: log\ndata: {"seq":1}'));
    channels[0]?.end();
    await vi.waitFor(() => expect(first.ended()).toBe(true));
    expect(closed).toEqual([0]);

    // A client that ends its side: the stream is closed at once (its releases run), not at its next write.
    const second = await open();
    expect(parsers[1]).toBeNull();
    second.socket.end();
    await vi.waitFor(() => expect(closed).toEqual([0, 1]));
    expect(channels[1]?.open).toBe(false);
    first.socket.destroy();
    second.socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
});
