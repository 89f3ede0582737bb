/** Every adapter owns its connections and says when they open and close. */
export interface Lifecycle {
  /** Opens connections, creates what must exist (tables, containers, queues) when allowed. */
  start(): Promise<void>;
  /** Releases everything `start` opened; in-flight calls finish or fail, none hangs. */
  close(): Promise<void>;
}

export interface DependencyHealth {
  status: 'healthy' | 'unhealthy';
  latencyMs: number;
  /** A short reason when unhealthy; never a connection string or credential. */
  detail?: string;
}

export interface HealthReporting {
  health(): Promise<DependencyHealth>;
}

/** Measures a probe and turns a throw into an unhealthy report. */
export async function probe(check: () => Promise<unknown>): Promise<DependencyHealth> {
  const started = performance.now();
  try {
    await check();
    return { status: 'healthy', latencyMs: Math.round(performance.now() - started) };
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    return { status: 'unhealthy', latencyMs: Math.round(performance.now() - started), detail: detail.slice(0, 200) };
  }
}

/** Starts each in order; if one fails, closes those already started (newest first) and rethrows. */
export async function startInOrder(parts: readonly Lifecycle[]): Promise<void> {
  const started: Lifecycle[] = [];
  try {
    for (const part of parts) {
      await part.start();
      started.push(part);
    }
  } catch (error) {
    await closeInReverse(started);
    throw error;
  }
}

/** Closes each, newest first; a failing close does not keep the others open. */
export async function closeInReverse(parts: readonly Lifecycle[]): Promise<void> {
  for (const part of [...parts].reverse()) await part.close().catch(() => undefined);
}
