import type { ChangeSignal } from '@zepid/core';
import { Doorbell } from './sqlite/doorbell.ts';

/**
 * The change signal of local mode: a doorbell file beside the database (`<database>-changes`, the
 * queue's doorbell mechanism on a file of its own so followers do not wake the queue's receivers),
 * rung after every committed store write and every log append by whichever process made it, and
 * watched by every API process on the same data dir. Followers still read the store and the log
 * for what changed, so a missed ring (a filesystem where watching is unreliable) costs only latency:
 * they also look on their fallback interval.
 */
export class FileChangeSignal implements ChangeSignal {
  private readonly bell: Doorbell;

  constructor(databasePath: string) {
    this.bell = databasePath === ':memory:' || databasePath === '' ? new Doorbell(null) : new Doorbell(`${databasePath}-changes`);
  }

  get rung(): number {
    return this.bell.rung;
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.bell.close();
    return Promise.resolve();
  }

  ring(): void {
    this.bell.ring();
  }

  wait(seen: number, ms: number, signal?: AbortSignal): Promise<void> {
    return this.bell.wait(seen, ms, signal);
  }
}

/**
 * `target` with each of `methods` ringing `signal` once its promise resolved (the write committed).
 * The adapters stay unaware of followers; wiring decides which writes are worth a ring.
 */
export function ringingAfter<T extends object>(target: T, methods: readonly (keyof T & string)[], signal: ChangeSignal): T {
  const wrapped = new Set<string>(methods);
  // Each method is bound (or wrapped) once, not on every access: a status poll calls two of them.
  const made = new Map<string | symbol, { method: unknown; made: unknown }>();
  return new Proxy(target, {
    get(object, property, receiver) {
      const value: unknown = Reflect.get(object, property, receiver);
      if (typeof value !== 'function') return value;
      const known = made.get(property);
      if (known !== undefined && known.method === value) return known.made;
      const method = value as (...args: unknown[]) => unknown;
      const result =
        typeof property !== 'string' || !wrapped.has(property)
          ? method.bind(object)
          : async (...args: unknown[]) => {
              const outcome = await method.apply(object, args);
              signal.ring();
              return outcome;
            };
      made.set(property, { method: value, made: result });
      return result;
    },
  });
}
