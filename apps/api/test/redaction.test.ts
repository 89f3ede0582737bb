import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { LOG_REDACT_PATHS } from '@zepid/core';

describe('log redaction', () => {
  it('pino writes neither the Authorization header nor env variable values', () => {
    let written = '';
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        written += chunk.toString();
        done();
      },
    });
    const logger = pino({ redact: { paths: LOG_REDACT_PATHS, censor: '[redacted]' } }, sink);
    logger.info({ req: { headers: { authorization: 'Bearer tok-secret-123456' } } }, 'request');
    logger.info({ body: { envVariables: { API_KEY: 'sk-live-abc' } } }, 'body');
    logger.info({ envVariables: { API_KEY: 'sk-live-abc' }, token: 'tok-secret-123456' }, 'other');
    expect(written).not.toContain('tok-secret-123456');
    expect(written).not.toContain('sk-live-abc');
    expect(written.match(/\[redacted\]/g)?.length).toBe(4);
  });
});
