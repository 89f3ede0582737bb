import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { LazyChildLogger } from '../src/event-stream.ts';

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
