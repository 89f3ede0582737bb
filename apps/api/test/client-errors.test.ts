import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness } from './harness.ts';
import { createHarness } from './harness.ts';

/** Sends raw bytes (what a client library would refuse to send) and reads the whole answer. */
function raw(port: number, request: string): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    socket.setTimeout(5000, () => socket.destroy(new Error('no answer')));
    socket.on('data', (chunk: Buffer) => (data += chunk.toString()));
    socket.on('error', reject);
    socket.on('close', () => {
      const [head = '', body = ''] = data.split('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), headers: head, body });
    });
    socket.end(request);
  });
}

// Node's HTTP parser refuses these before Fastify routes anything; they still answer in the
// documented error shape (Fastify's own bodies were `{"error":"Bad Request","message":"Client Error","statusCode":400}`).
describe('errors raised by the HTTP parser', () => {
  let h: Harness;
  let port: number;

  beforeAll(async () => {
    h = await createHarness();
    await h.app.listen({ port: 0, host: '127.0.0.1' });
    port = (h.app.server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    await h.close();
  });

  const shape = (code: string) => ({ success: false, error: code, message: expect.any(String) as string, timestamp: expect.any(String) as string });

  it('answers an oversized URL with 431 HEADERS_TOO_LARGE', async () => {
    const answer = await raw(port, `GET /deploy/${'a'.repeat(20_000)} HTTP/1.1\r\nhost: x\r\n\r\n`);
    expect(answer.status).toBe(431);
    expect(answer.headers).toMatch(/content-type: application\/json/i);
    expect(JSON.parse(answer.body)).toEqual(shape('HEADERS_TOO_LARGE'));
  });

  it('answers an oversized header with 431 HEADERS_TOO_LARGE', async () => {
    const answer = await raw(port, `GET /health HTTP/1.1\r\nhost: x\r\nx-big: ${'b'.repeat(20_000)}\r\n\r\n`);
    expect(answer.status).toBe(431);
    expect(JSON.parse(answer.body)).toEqual(shape('HEADERS_TOO_LARGE'));
  });

  it('answers a request that is not HTTP with 400 BAD_REQUEST', async () => {
    const answer = await raw(port, 'HELLO THERE\r\n\r\n');
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toEqual(shape('BAD_REQUEST'));
  });

  it('still answers well-formed requests on new connections afterwards', async () => {
    const answer = await raw(port, 'GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
    expect(answer.status).toBe(200);
  });
});
