import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** One request as the simulator's handlers see it. */
export interface ArmRequest {
  method: string;
  url: URL;
  headers: IncomingMessage['headers'];
  rawBody: string;
  /** Parsed JSON (or form fields for the registry's OAuth endpoints); undefined when there is no body. */
  body: unknown;
}

export interface ArmResponse {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

/** An error answered the way ARM does: `{ error: { code, message, details? } }` with an HTTP status. */
export class ArmHttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: string[];
  /** Set when a test asked for this answer (a scenario or an injected fault), as opposed to a malformed request. */
  readonly scenario: boolean;

  constructor(status: number, code: string, message: string, details: string[] = [], scenario = false) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.scenario = scenario;
  }

  toResponse(): ArmResponse {
    return {
      status: this.status,
      body: {
        error: {
          code: this.code,
          message: this.message,
          ...(this.details.length > 0 ? { details: this.details.map((detail) => ({ code: this.code, message: detail })) } : {}),
        },
      },
    };
  }
}

const MAX_BODY_BYTES = 4 * 1024 * 1024;

export async function readRequest(request: IncomingMessage, base: string): Promise<ArmRequest> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > MAX_BODY_BYTES) throw new ArmHttpError(413, 'RequestEntityTooLarge', 'The request body is too large');
    chunks.push(buffer);
  }
  const rawBody = Buffer.concat(chunks).toString('utf8');
  const url = new URL(request.url ?? '/', base);
  const type = request.headers['content-type'] ?? '';
  let body: unknown;
  if (rawBody !== '') {
    if (type.includes('application/x-www-form-urlencoded')) {
      body = Object.fromEntries(new URLSearchParams(rawBody));
    } else {
      try {
        body = JSON.parse(rawBody) as unknown;
      } catch {
        throw new ArmHttpError(400, 'InvalidRequestContent', 'The request content was invalid and could not be deserialized: not JSON.');
      }
    }
  }
  return { method: request.method ?? 'GET', url, headers: request.headers, rawBody, body };
}

export function writeResponse(response: ServerResponse, answer: ArmResponse): void {
  const headers: Record<string, string> = { 'x-ms-request-id': randomUUID(), ...answer.headers };
  if (answer.body === undefined) {
    response.writeHead(answer.status, headers);
    response.end();
    return;
  }
  const text = JSON.stringify(answer.body);
  response.writeHead(answer.status, { ...headers, 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(text)) });
  response.end(text);
}

/** RFC 7386 JSON merge patch, the semantics of Container Apps' PATCH. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const base: Record<string, unknown> = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete base[key];
    else base[key] = mergePatch(base[key], value);
  }
  return base;
}
