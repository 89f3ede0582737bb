import { setTimeout as delay } from 'node:timers/promises';
import { DeployError } from '@zepid/core';

/** Intervals of a status poll: start short (most states change within seconds), grow to a ceiling. */
export class Backoff {
  private current: number;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly factor: number;

  constructor(initialMs: number, maxMs: number, factor = 1.5) {
    this.initialMs = initialMs;
    this.current = initialMs;
    this.maxMs = Math.max(initialMs, maxMs);
    this.factor = factor;
  }

  next(): number {
    const value = this.current;
    this.current = Math.min(this.maxMs, Math.round(this.current * this.factor));
    return value;
  }

  reset(): void {
    this.current = this.initialMs;
  }
}

/** Waits `ms`, or less when the signal fires; never throws for the abort (the caller checks the signal). */
export async function pause(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return;
  try {
    await delay(ms, undefined, { signal });
  } catch (error) {
    if (!signal.aborted) throw error;
  }
}

/**
 * The error for a step stopped by its signal. The workflow aborts with a DeployError (its own
 * TIMEOUT or CANCELLED) or with `AbortSignal.timeout`'s TimeoutError; anything else is a cancel.
 */
export function abortError(signal: AbortSignal, during: string): DeployError {
  const reason: unknown = signal.reason;
  if (reason instanceof DeployError) return reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') {
    return new DeployError('TIMEOUT', `The deployment timed out during ${during}`);
  }
  return new DeployError('CANCELLED', `The deployment was cancelled during ${during}`);
}

