import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync, inflateSync } from 'node:zlib';
import { testCertificate } from '../tls.ts';

/**
 * An HTTPS fake of the Application Insights ingestion endpoint ("Breeze"), as far as the
 * `applicationinsights` v3 SDK (Azure Monitor OpenTelemetry exporter) uses it:
 * - `POST /v2.1/track` (also `/v2/track`) with a JSON array of envelopes, gzip-compressed or not;
 *   answered `200 {itemsReceived, itemsAccepted, errors: []}` like the real service; items lacking
 *   `name`, `time`, `iKey` or `data.baseType` are refused with per-item errors (206, or 400 when
 *   none is accepted), and a body that is not JSON gets 400;
 * - Entra-authenticated ingestion: with `token`, a request without `Authorization: Bearer <token>`
 *   gets 401 like a resource with local authentication disabled; without it, any request is taken;
 * - anything else (Live Metrics `QuickPulseService.svc`, unknown paths) is recorded in
 *   `otherRequests` and answered 404, so a test notices telemetry going where it did not expect.
 * Differences from the real service: no throttling (429/439), no partial acceptance (206) except
 * for items missing a required field, no schema validation beyond the fields above, no sampling, no
 * redirect (308) to a regional endpoint, and every instrumentation key is accepted.
 */

export interface AppInsightsEnvelope {
  name: string;
  time: string;
  iKey: string;
  sampleRate?: number;
  tags: Record<string, string>;
  data: {
    baseType: string;
    baseData: Record<string, unknown> & {
      name?: string;
      properties?: Record<string, string>;
      measurements?: Record<string, number>;
      metrics?: { name: string; value: number; count?: number; min?: number; max?: number }[];
    };
  };
}

export interface FakeIngestionRequest {
  method: string;
  path: string;
  gzip: boolean;
  /** Whether an `Authorization: Bearer …` header came (Entra-authenticated ingestion). */
  bearer: boolean;
  items: number;
}

export interface MetricPoint {
  envelope: AppInsightsEnvelope;
  name: string;
  value: number;
  count: number;
  min: number | undefined;
  max: number | undefined;
  properties: Record<string, string>;
}

export interface FakeAppInsights {
  /** `https://127.0.0.1:<port>/` */
  endpoint: string;
  /** A connection string pointing every kind of telemetry at this fake. */
  connectionString: string;
  instrumentationKey: string;
  /** Every envelope received, in order of arrival. */
  readonly envelopes: AppInsightsEnvelope[];
  /** Every track request (no bodies; see `envelopes`). */
  readonly requests: FakeIngestionRequest[];
  /** Requests to any other path (Live Metrics, unknown). */
  readonly otherRequests: { method: string; path: string }[];
  /** Raw text of every track body after decompression, to look for values that must never leave the process. */
  rawBodies(): string;
  /** customEvents with this name (`data.baseType === 'EventData'`). */
  events(name?: string): AppInsightsEnvelope[];
  /** customMetrics points with this name (one `MetricData` envelope may hold several). */
  metrics(name?: string): MetricPoint[];
  /** requests table entries (`RequestData`): server and consumer spans. */
  requestsTelemetry(name?: string): AppInsightsEnvelope[];
  /** dependencies table entries (`RemoteDependencyData`). */
  dependencies(): AppInsightsEnvelope[];
  /** Resolves once `predicate` holds for the envelopes received, or rejects after `timeoutMs`. */
  waitFor(predicate: (envelopes: AppInsightsEnvelope[]) => boolean, timeoutMs?: number, what?: string): Promise<void>;
  /** Answers every track request with this status (e.g. 503, 500) until called with null. */
  failWith(status: number | null): void;
  /** While on, track requests are read but never answered (an ingestion endpoint that hangs). */
  stall(on: boolean): void;
  stop(): Promise<void>;
}

export interface FakeAppInsightsOptions {
  /** The only bearer token accepted; when absent, no token is needed (instrumentation-key ingestion). */
  token?: string;
}

const TRACK_PATHS = new Set(['/v2.1/track', '/v2/track']);
const INSTRUMENTATION_KEY = '00000000-0000-4000-8000-000000000001';

async function readBody(request: IncomingMessage): Promise<{ text: string; gzip: boolean }> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  let body = Buffer.concat(chunks);
  const encoding = (request.headers['content-encoding'] ?? '').toLowerCase();
  const gzip = encoding === 'gzip';
  if (gzip) body = gunzipSync(body);
  else if (encoding === 'deflate') body = inflateSync(body);
  return { text: body.toString('utf8'), gzip };
}

function send(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  response.end(text);
}

function isEnvelope(item: unknown): item is AppInsightsEnvelope {
  if (typeof item !== 'object' || item === null) return false;
  const candidate = item as Partial<AppInsightsEnvelope>;
  return (
    typeof candidate.name === 'string' &&
    typeof candidate.time === 'string' &&
    typeof candidate.iKey === 'string' &&
    typeof candidate.data === 'object' &&
    candidate.data !== null &&
    typeof candidate.data.baseType === 'string'
  );
}

export async function startFakeAppInsights(options: FakeAppInsightsOptions = {}): Promise<FakeAppInsights> {
  const envelopes: AppInsightsEnvelope[] = [];
  const requests: FakeIngestionRequest[] = [];
  const otherRequests: { method: string; path: string }[] = [];
  const bodies: string[] = [];
  let failure: number | null = null;
  let stalled = false;

  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    const path = new URL(request.url ?? '/', 'https://fake').pathname;
    if (request.method !== 'POST' || !TRACK_PATHS.has(path)) {
      request.resume();
      otherRequests.push({ method: request.method ?? '', path });
      send(response, 404, { error: `not served by the fake: ${request.method} ${path}` });
      return;
    }
    const { text, gzip } = await readBody(request);
    if (stalled) {
      requests.push({ method: 'POST', path, gzip, bearer: false, items: 0 });
      return;
    }
    const bearer = /^Bearer \S+$/.test(request.headers.authorization ?? '');
    if (options.token !== undefined && request.headers.authorization !== `Bearer ${options.token}`) {
      requests.push({ method: 'POST', path, gzip, bearer, items: 0 });
      send(response, 401, { itemsReceived: 0, itemsAccepted: 0, errors: [{ index: 0, statusCode: 401, message: 'Authorization token is missing or invalid' }] });
      return;
    }
    let items: unknown;
    try {
      items = JSON.parse(text);
    } catch {
      requests.push({ method: 'POST', path, gzip, bearer, items: 0 });
      send(response, 400, { itemsReceived: 0, itemsAccepted: 0, errors: [{ index: 0, statusCode: 400, message: 'Invalid JSON' }] });
      return;
    }
    const list = Array.isArray(items) ? items : [items];
    requests.push({ method: 'POST', path, gzip, bearer, items: list.length });
    if (failure !== null) {
      send(response, failure, {
        itemsReceived: list.length,
        itemsAccepted: 0,
        errors: list.map((_, index) => ({ index, statusCode: failure, message: 'Failure injected by the fake' })),
      });
      return;
    }
    bodies.push(text);
    const errors: { index: number; statusCode: number; message: string }[] = [];
    list.forEach((item, index) => {
      if (isEnvelope(item)) envelopes.push({ ...item, tags: item.tags ?? {} });
      else errors.push({ index, statusCode: 400, message: 'Field name, time, iKey or data.baseType is missing' });
    });
    const status = errors.length === 0 ? 200 : errors.length === list.length ? 400 : 206;
    send(response, status, { itemsReceived: list.length, itemsAccepted: list.length - errors.length, errors });
  };

  const { key, cert } = testCertificate();
  const server = createServer({ key, cert }, (request, response) => {
    handle(request, response).catch((error: unknown) => {
      if (!response.headersSent) send(response, 500, { error: error instanceof Error ? error.message : String(error) });
      else response.destroy();
    });
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const endpoint = `https://127.0.0.1:${port}/`;

  const ofType = (baseType: string, name?: string) =>
    envelopes.filter((envelope) => envelope.data.baseType === baseType && (name === undefined || envelope.data.baseData.name === name));

  return {
    endpoint,
    instrumentationKey: INSTRUMENTATION_KEY,
    connectionString: `InstrumentationKey=${INSTRUMENTATION_KEY};IngestionEndpoint=${endpoint};LiveEndpoint=${endpoint}`,
    envelopes,
    requests,
    otherRequests,
    rawBodies: () => bodies.join('\n'),
    events: (name) => ofType('EventData', name),
    metrics: (name) =>
      ofType('MetricData').flatMap((envelope) =>
        (envelope.data.baseData.metrics ?? [])
          .filter((point) => name === undefined || point.name === name)
          .map((point) => ({
            envelope,
            name: point.name,
            value: point.value,
            count: point.count ?? 1,
            min: point.min,
            max: point.max,
            properties: envelope.data.baseData.properties ?? {},
          })),
      ),
    requestsTelemetry: (name) => ofType('RequestData', name),
    dependencies: () => ofType('RemoteDependencyData'),
    waitFor: async (predicate, timeoutMs = 15_000, what = 'telemetry') => {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(envelopes)) {
        if (Date.now() > deadline) {
          const seen = envelopes.map((e) => `${e.data.baseType}:${String(e.data.baseData.name ?? e.data.baseData.metrics?.[0]?.name ?? '')}`);
          throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}; received ${envelopes.length} envelopes: ${seen.join(', ')}`);
        }
        await sleep(25);
      }
    },
    failWith: (status) => {
      failure = status;
    },
    stall: (on) => {
      stalled = on;
    },
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
