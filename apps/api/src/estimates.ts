import type { DeploymentRecord, DeploymentStore, StepName } from '@zepid/core';
import { kindOf, STEPS } from '@zepid/core';

/**
 * How long deployments of an organization took lately: the `estimatedDuration` of POST /deploy (a
 * fixed text said "1-3 minutes" where local builds take 4-40 s) and the pace of `progress`.
 */
export interface RecentTimes {
  /** e.g. "4-40 seconds (last 12 completed deployments)"; null when none completed lately. */
  summary: string | null;
  /** Median duration of each step in those deployments. */
  stepMs: Partial<Record<StepName, number>>;
}

const SAMPLE = 50;
const TTL_MS = 60_000;
const MAX_ORGS = 1_000;

/** Derives RecentTimes from records (only completed builds count: a rollback or config deployment builds nothing). */
export function recentTimes(records: readonly DeploymentRecord[]): RecentTimes {
  const completed = records.filter((record) => record.status === 'completed' && record.finishedAt !== null && kindOf(record) === 'build');
  const totals = completed.map((record) => Date.parse(record.finishedAt ?? '') - Date.parse(record.createdAt)).filter((ms) => Number.isFinite(ms) && ms >= 0);
  const stepMs: Partial<Record<StepName, number>> = {};
  for (const step of STEPS) {
    const durations = completed
      .map((record) => record.steps[step])
      .filter((state) => state.startedAt !== null && state.finishedAt !== null)
      .map((state) => Date.parse(state.finishedAt ?? '') - Date.parse(state.startedAt ?? ''))
      .filter((ms) => Number.isFinite(ms) && ms >= 0);
    const median = medianOf(durations);
    if (median !== null) stepMs[step] = median;
  }
  if (totals.length === 0) return { summary: null, stepMs };
  const [low, high] = [Math.min(...totals), Math.max(...totals)];
  const range = low === high || formatDuration(low) === formatDuration(high) ? `about ${formatDuration(high)}` : `${formatDuration(low)} to ${formatDuration(high)}`;
  return { summary: `${range} (last ${totals.length === 1 ? 'completed deployment' : `${totals.length} completed deployments`})`, stepMs };
}

function medianOf(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? null;
}

function formatDuration(ms: number): string {
  const seconds = Math.max(1, Math.round(ms / 1000));
  if (seconds < 120) return `${seconds} s`;
  return `${Math.round(seconds / 60)} min`;
}

/**
 * RecentTimes per organization from the store, read at most once a minute per organization: a
 * POST /deploy or a status read costs no extra query the rest of the time.
 */
/** One organization's read: when it started, its answer, and that answer once it came (`settledFor`). */
interface RecentTimesEntry {
  at: number;
  times: Promise<RecentTimes>;
  settled: RecentTimes | null;
}

export class RecentTimesCache {
  private readonly store: Pick<DeploymentStore, 'listRecent'>;
  private readonly now: () => number;
  private readonly entries = new Map<string, RecentTimesEntry>();

  constructor(store: Pick<DeploymentStore, 'listRecent'>, now: () => number = Date.now) {
    this.store = store;
    this.now = now;
  }

  forOrg(orgId: string): Promise<RecentTimes> {
    const cached = this.entries.get(orgId);
    if (cached !== undefined && this.now() - cached.at < TTL_MS) return cached.times;
    const entry: RecentTimesEntry = { at: this.now(), times: this.store.listRecent(orgId, SAMPLE).then(recentTimes), settled: null };
    entry.times.then(
      (times) => {
        entry.settled = times;
      },
      // A failed read is not remembered: the next request asks again.
      () => {
        if (this.entries.get(orgId) === entry) this.entries.delete(orgId);
      },
    );
    this.entries.delete(orgId);
    if (this.entries.size >= MAX_ORGS) this.entries.delete(this.entries.keys().next().value ?? '');
    this.entries.set(orgId, entry);
    return entry.times;
  }

  /**
   * The organization's times when a read of the last minute has already answered, without a promise
   * (POST /deploy's answer: BENCHMARKS.md); undefined otherwise (then `forOrg`).
   */
  settledFor(orgId: string): RecentTimes | undefined {
    const cached = this.entries.get(orgId);
    if (cached === undefined || cached.settled === null || this.now() - cached.at >= TTL_MS) return undefined;
    return cached.settled;
  }
}
