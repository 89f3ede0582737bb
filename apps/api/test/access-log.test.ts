import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { newDeploymentId } from '@zepid/core';
import type { Harness } from './harness.ts';
import { createHarness, TOKENS } from './harness.ts';

describe('access log', () => {
  let h: Harness;
  afterEach(async () => {
    await h.close();
  });

  it('writes one line per request, labelled with the caller\'s x-request-id, and no Fastify request lines', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    h = await createHarness({ logger: pino({ level: 'info' }, sink) });
    const url = `/deploy/${newDeploymentId()}/status`;
    const response = await h.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${TOKENS.org_456}`, 'x-request-id': 'trace-42' } });
    expect(response.statusCode).toBe(404);
    const ours = lines.filter((line) => line.requestId === 'trace-42');
    expect(ours.map((line) => line.msg)).toEqual(['request completed']);
    expect(ours[0]).toMatchObject({ method: 'GET', url, statusCode: 404 });
    expect(lines.some((line) => line.msg === 'incoming request' || line.reqId !== undefined)).toBe(false);
  });
});
