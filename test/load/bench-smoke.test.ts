import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { findProgram, straceUsable } from '../../scripts/bench/peers/harness.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** Every figure the full bench reports (issue 6); the smoke run must produce each one. */
const FIGURES = [
  'rss_api_idle',
  'rss_worker_idle',
  'static_to_url_p50',
  'static_to_url_p95',
  'redeploy_ratio_static',
  'redeploy_stored_bytes_static',
  'redeploy_ratio_node',
  'redeploy_stored_bytes_node',
  'post_sqlite_ratio',
  'status_sqlite_ratio',
  'sqlite_post_rps',
  'sqlite_status_rps',
  'post_rps_ratio',
  'status_rps_ratio',
  'post_rps',
  'bare_post_rps',
  'status_rps',
  'bare_get_rps',
  'post_latency_p50',
  'post_latency_p99',
  'status_latency_p50',
  'status_latency_p99',
  'pickup_p50',
  'pickup_p99',
  'pickup_worker_loop_delay_p99',
  'throughput_c5',
  'store_writes_per_deployment',
  'worker_cpu_c5',
  'worker_cpu_c50',
  'queue_ops_per_deployment',
  'throughput_c50',
  'rss_api_inflight',
  'rss_worker_inflight',
  'queue_pickup_embedded_p50',
  'queue_pickup_embedded_p99',
  'queue_pickup_servicebus_p50',
  'queue_pickup_servicebus_p99',
  'sse_latency_p50',
  'sse_latency_p99',
  'sse_latency_busy_p50',
  'sse_latency_busy_p99',
  'rss_api_streams_0',
  'rss_api_streams_open',
  'rss_api_per_stream_kb',
  'webhook_latency_p50',
  'webhook_latency_p99',
];

/**
 * Figures of the peers that need a program from outside npm (issue 16): present whenever the
 * program is installed here (.ci/run installs them), and only then.
 */
const PEER_FIGURES: Record<string, string[]> = {
  nginx: ['static_nginx_ratio', 'static_router_rps', 'static_nginx_rps'],
  'redis-server': ['post_bullmq_ratio', 'bullmq_post_rps'],
  strace: ['db_writes_ratio', 'db_writes_per_post', 'sqlite_db_writes_per_post', 'db_reads_per_post', 'sqlite_db_reads_per_post'],
};

/**
 * `npm run bench -- --smoke`: the whole bench with tiny counts, so it never rots. It checks that the
 * bench runs from this checkout and reports every figure as a number — not the figures' values:
 * speed targets live in the bench, not in tests (these machines are shared and noisy). Two facts
 * that do not depend on speed are checked: an unchanged redeploy stores 0 source bytes again, and
 * a deployment costs the store the writes BENCHMARKS.md explains.
 */
describe('npm run bench -- --smoke', () => {
  let dir = '';
  afterAll(async () => {
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('runs every phase and writes a JSON result with every figure', async () => {
    dir = await mkdtemp(join(tmpdir(), 'zepid-bench-smoke-'));
    const out = join(dir, 'result.json');
    const child = spawn(process.execPath, ['scripts/bench.ts', '--smoke', '--out', out], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, output).toBe(0);
    const result = JSON.parse(await readFile(out, 'utf8')) as {
      smoke: boolean;
      figures: { id: string; value: number; target: string | null; met: boolean | null }[];
      raw: Record<string, { objectBytesDelta: number }[] | undefined>;
    };
    expect(result.smoke).toBe(true);
    const expected = [...FIGURES];
    for (const [program, ids] of Object.entries(PEER_FIGURES)) {
      // strace installed is not enough: it must be allowed to attach (ptrace), as the bench checks.
      if (program === 'strace' ? straceUsable() : findProgram(program) !== null) expected.push(...ids);
    }
    expect(result.figures.map((figure) => figure.id).sort()).toEqual(expected.sort());
    for (const figure of result.figures) expect(Number.isFinite(figure.value), `${figure.id} = ${figure.value}`).toBe(true);
    const value = (id: string) => result.figures.find((figure) => figure.id === id)?.value;
    expect(value('redeploy_stored_bytes_static')).toBe(0);
    expect(value('redeploy_stored_bytes_node')).toBe(0);
    // ...and on disk: the object store did not grow by a byte.
    for (const sample of ['redeploy_static', 'redeploy_node']) {
      for (const pair of result.raw[sample] ?? []) expect(pair.objectBytesDelta).toBe(0);
    }
    // 8 by the API and the workflow; none by the webhook dispatcher, which reads and removes pending
    // events apart from the records (issue 16; it used to write each record once more to empty its outbox).
    expect(value('store_writes_per_deployment')).toBe(8);
    for (const id of ['worker_cpu_c5', 'worker_cpu_c50']) expect(value(id)).toBeGreaterThan(0);
    expect(output).toContain('| figure');
  }, 300_000);
});
