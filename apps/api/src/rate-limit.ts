import type { FastifyReply, FastifyRequest } from 'fastify';
import { DeployError } from '@zepid/core';

/** How long one window of a token's count lasts. */
const WINDOW_MS = 60_000;
/** Counts kept at most (tokens seen within a window); past it the oldest window is forgotten. */
const MAX_KEYS = 5000;

interface Window {
  count: number;
  startedAt: number;
}

/**
 * RATE_LIMIT_PER_MINUTE: requests per token in fixed windows of a minute, counted in this process
 * (each API replica counts its own). What @fastify/rate-limit's local store did, with its headers
 * (`x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` in seconds; `retry-after` too
 * once refused), without its per-request promises and route-option lookups: it was ~3 % of a status
 * poll's CPU (BENCHMARKS.md). Refusals are 429 `RATE_LIMITED` in the documented error shape.
 * `keyOf` names the counter: the token's hash, never the token.
 */
export function rateLimitHook(max: number, keyOf: (request: FastifyRequest) => string, now: () => number = Date.now) {
  const windows = new Map<string, Window>();
  return (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void => {
    const key = keyOf(request);
    const at = now();
    let window = windows.get(key);
    if (window === undefined || at - window.startedAt >= WINDOW_MS) {
      if (window === undefined && windows.size >= MAX_KEYS) windows.delete(windows.keys().next().value ?? '');
      window = { count: 0, startedAt: at };
      // Re-inserted: the map's order is the windows' age, oldest first.
      windows.delete(key);
      windows.set(key, window);
    }
    window.count += 1;
    const resetSeconds = Math.ceil((window.startedAt + WINDOW_MS - at) / 1000);
    void reply.header('x-ratelimit-limit', max);
    if (window.count <= max) {
      void reply.header('x-ratelimit-remaining', max - window.count);
      void reply.header('x-ratelimit-reset', resetSeconds);
      done();
      return;
    }
    void reply.header('x-ratelimit-remaining', 0);
    void reply.header('x-ratelimit-reset', resetSeconds);
    done(new DeployError('RATE_LIMITED', `More than ${max} requests per minute with this token; retry in ${resetSeconds} s`, { retryAfterSeconds: resetSeconds }));
  };
}
