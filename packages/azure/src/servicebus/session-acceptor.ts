import { setTimeout as sleep } from 'node:timers/promises';
import type { ServiceBusSessionReceiver } from '@azure/service-bus';
import { isServiceBusError } from '@azure/service-bus';

/**
 * Accepting the next session is a long poll: the broker holds the link attach until a session can be
 * locked or its timeout (the client's operation timeout) passes, and the SDK cannot cancel that wait
 * (`acceptNextSession` does not pass its abort signal to the link). A caller that stops waiting
 * earlier (its own `waitMs`, an aborted signal) therefore leaves the accept running.
 *
 * Such an abandoned accept stays here and the next caller takes it over instead of starting another
 * one; if it locks a session while nobody waits for it, that session is released at once, so a
 * project is never held by a worker that did not ask for a job. `drain` awaits whatever is still
 * running (after the client closed, the pending attaches fail at once).
 */

type Outcome = { receiver: ServiceBusSessionReceiver } | { receiver: null; error: unknown };

interface PendingAccept {
  readonly done: Promise<Outcome>;
  claimed: boolean;
  outcome: Outcome | undefined;
}

const MIN_POLL_INTERVAL_MS = 100;

/** Codes with which the broker says "no session could be locked in time", i.e. no job now. */
const NO_SESSION_CODES = new Set(['ServiceTimeout', 'SessionCannotBeLocked']);

export function isNoSessionAvailable(error: unknown): boolean {
  return isServiceBusError(error) && NO_SESSION_CODES.has(error.code);
}

export class SessionAcceptor {
  private readonly acceptNext: () => Promise<ServiceBusSessionReceiver>;
  /** Closes a session receiver; never throws. */
  private readonly release: (receiver: ServiceBusSessionReceiver) => Promise<void>;
  /** Accepts whose caller stopped waiting, oldest first. */
  private readonly unclaimed: PendingAccept[] = [];
  private readonly running = new Set<PendingAccept>();

  constructor(acceptNext: () => Promise<ServiceBusSessionReceiver>, release: (receiver: ServiceBusSessionReceiver) => Promise<void>) {
    this.acceptNext = acceptNext;
    this.release = release;
  }

  private start(): PendingAccept {
    const pending: PendingAccept = {
      claimed: true,
      outcome: undefined,
      done: this.acceptNext().then(
        (receiver): Outcome => ({ receiver }),
        (error: unknown): Outcome => ({ receiver: null, error }),
      ),
    };
    this.running.add(pending);
    void pending.done.then(async (outcome) => {
      pending.outcome = outcome;
      this.running.delete(pending);
      if (pending.claimed) return;
      const index = this.unclaimed.indexOf(pending);
      if (index >= 0) this.unclaimed.splice(index, 1);
      if (outcome.receiver !== null) await this.release(outcome.receiver);
    });
    return pending;
  }

  /**
   * A locked session within `waitMs`, or null when none came in time or `signal` aborted. Throws
   * when the broker refuses to give sessions at all (credentials, missing queue, connection).
   */
  async next(waitMs: number, signal: AbortSignal): Promise<ServiceBusSessionReceiver | null> {
    const deadline = Date.now() + waitMs;
    while (!signal.aborted && Date.now() < deadline) {
      const startedAt = Date.now();
      const pending = this.unclaimed.shift() ?? this.start();
      pending.claimed = true;
      const outcome = await settledWithin(pending.done, deadline - Date.now(), signal);
      const result = outcome ?? pending.outcome;
      if (result === undefined) {
        // Still waiting at the broker: leave it for the next caller.
        pending.claimed = false;
        this.unclaimed.push(pending);
        return null;
      }
      if (result.receiver !== null) {
        if (!signal.aborted) return result.receiver;
        await this.release(result.receiver);
        return null;
      }
      if (!isNoSessionAvailable(result.error)) throw result.error;
      // A broker that answers "no session" at once instead of holding the wait must not be polled in a tight loop.
      const pause = MIN_POLL_INTERVAL_MS - (Date.now() - startedAt);
      if (pause > 0) await sleep(Math.min(pause, Math.max(0, deadline - Date.now())), undefined, { signal }).catch(() => undefined);
    }
    return null;
  }

  /** Waits (bounded) for accepts still running, releasing what they lock. */
  async drain(timeoutMs: number): Promise<void> {
    const all = Promise.allSettled([...this.running].map((pending) => pending.done));
    await settledWithin(all, timeoutMs, new AbortController().signal);
  }
}

/** The promise's value if it settles within `ms` and before `signal` aborts; undefined otherwise. */
async function settledWithin<T>(promise: Promise<T>, ms: number, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return undefined;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(0, ms));
    onAbort = () => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, stop]);
  } finally {
    clearTimeout(timer);
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
  }
}
