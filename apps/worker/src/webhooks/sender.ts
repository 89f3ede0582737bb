import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import { Webhook } from 'standardwebhooks';
import type { Resolver, WebhookAddressPolicy } from '@zepid/core';
import { isDeployError, resolveWebhookTarget, SERVICE_NAME, SERVICE_VERSION, systemResolver } from '@zepid/core';

export interface SendResult {
  statusCode: number | null;
  /** Seconds or an HTTP date from the answer's Retry-After, as milliseconds. */
  retryAfterMs: number | null;
  latencyMs: number;
  error: string | null;
  /**
   * What kind of failure, for telemetry (no URL, no text from the endpoint): `HTTP_<status>` for a
   * non-2xx answer, TIMEOUT, ADDRESS_REFUSED, CUT_OFF, or the socket error's code; null on 2xx.
   */
  errorClass: string | null;
}

const httpClass = (statusCode: number | null) => (statusCode === null || (statusCode >= 200 && statusCode < 300) ? null : `HTTP_${statusCode}`);

export interface SendOptions {
  policy: WebhookAddressPolicy;
  timeoutMs: number;
  resolve?: Resolver;
}

/** The `webhook-signature` header: one `v1,<base64>` per secret, space-separated (rotation signs with both). */
export function signatureHeader(secrets: readonly string[], msgId: string, at: Date, payload: string): string {
  return secrets.map((secret) => new Webhook(secret).sign(msgId, at, payload)).join(' ');
}

function retryAfterOf(value: string | string[] | undefined, now: number): number | null {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined) return null;
  if (/^\d+$/.test(raw.trim())) return Number(raw.trim()) * 1000;
  const date = Date.parse(raw);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/**
 * One attempt: resolve and check the address (SSRF rules, at every attempt), connect to exactly the
 * address checked (no second lookup a rebinding DNS server could answer differently), POST the
 * signed payload, and wait at most `timeoutMs` for the answer. Never throws: failures are results.
 */
export async function sendWebhook(url: string, headers: Record<string, string>, payload: string, options: SendOptions): Promise<SendResult> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  let target: { address: string; family: 4 | 6 };
  const parsed = new URL(url);
  try {
    target = await resolveWebhookTarget(parsed, options.policy, options.resolve ?? systemResolver);
  } catch (error) {
    return { statusCode: null, retryAfterMs: null, latencyMs: elapsed(), error: isDeployError(error) ? error.message : String(error), errorClass: 'ADDRESS_REFUSED' };
  }
  const pinned: LookupFunction = (_host, lookupOptions, callback) => {
    if ((lookupOptions as { all?: boolean }).all === true) {
      (callback as unknown as (error: null, addresses: { address: string; family: number }[]) => void)(null, [{ address: target.address, family: target.family }]);
    } else callback(null, target.address, target.family);
  };
  const request = parsed.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<SendResult>((resolve) => {
    let settled = false;
    const finish = (result: SendResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const req = request(
      parsed,
      {
        method: 'POST',
        lookup: pinned,
        headers: {
          ...headers,
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(payload)),
          'user-agent': `${SERVICE_NAME}/${SERVICE_VERSION} (webhooks)`,
        },
      },
      (response) => {
        // The body is not needed; read a little of it so the connection can finish, then stop.
        response.resume();
        response.on('end', () =>
          finish({
            statusCode: response.statusCode ?? null,
            retryAfterMs: retryAfterOf(response.headers['retry-after'], Date.now()),
            latencyMs: elapsed(),
            error: null,
            errorClass: httpClass(response.statusCode ?? null),
          }),
        );
        response.on('error', () =>
          finish({ statusCode: response.statusCode ?? null, retryAfterMs: null, latencyMs: elapsed(), error: 'the answer was cut off', errorClass: 'CUT_OFF' }),
        );
      },
    );
    const timer = setTimeout(() => {
      req.destroy();
      finish({ statusCode: null, retryAfterMs: null, latencyMs: elapsed(), error: `no answer within ${options.timeoutMs} ms`, errorClass: 'TIMEOUT' });
    }, options.timeoutMs);
    req.on('error', (error: NodeJS.ErrnoException) =>
      finish({ statusCode: null, retryAfterMs: null, latencyMs: elapsed(), error: `${error.code ?? 'ERROR'}: could not send`, errorClass: error.code ?? 'ERROR' }),
    );
    req.end(payload);
  });
}
