import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ErrorCode } from '@zepid/core';
import { DeployError, ERROR_CODES } from '@zepid/core';
import type { ErrorBody } from './schemas.ts';

/**
 * The one place where errors become HTTP answers: `{success: false, error: CODE, message, details?,
 * timestamp}`. 5xx messages never carry internals; the log has them.
 */
export function errorBody(code: string, message: string, details?: unknown): ErrorBody {
  return { success: false, error: code, message, ...(details === undefined ? {} : { details }), timestamp: new Date().toISOString() };
}

interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

/** One entry per field, naming it as a JSON pointer without the leading slash (`files/3/path`). */
function validationDetails(errors: AjvError[], context: string): { field: string; message: string }[] {
  const byField = new Map<string, string>();
  for (const error of errors) {
    let field = error.instancePath.replace(/^\//, '');
    let message = error.message ?? error.keyword;
    if (error.keyword === 'required' && typeof error.params.missingProperty === 'string') {
      field = field === '' ? error.params.missingProperty : `${field}/${error.params.missingProperty}`;
      message = 'is required';
    } else if (error.keyword === 'additionalProperties' && typeof error.params.additionalProperty === 'string') {
      const parent = field;
      field = field === '' ? error.params.additionalProperty : `${field}/${error.params.additionalProperty}`;
      message = parent.endsWith('envVariables')
        ? 'is not a valid environment variable name (letters, digits and _, not starting with a digit)'
        : 'is not an accepted field';
    } else if (error.keyword === 'propertyNames' || error.keyword === 'pattern') {
      message = error.keyword === 'pattern' ? 'has an invalid format' : 'has an invalid name';
    }
    if (field === '') field = context;
    // The first (most specific) message per field is enough; anyOf branches repeat themselves.
    if (!byField.has(field)) byField.set(field, message);
  }
  return [...byField].map(([field, message]) => ({ field, message }));
}

const FASTIFY_CODES: Record<string, { code: ErrorCode; message: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { code: 'PAYLOAD_TOO_LARGE', message: 'Request body is larger than the limit for this endpoint' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'Send JSON with content-type: application/json' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { code: 'VALIDATION_ERROR', message: 'Content-Length does not match the body' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: 'INVALID_JSON', message: 'Body is empty but content-type is application/json' },
  FST_ERR_CTP_INVALID_JSON_BODY: { code: 'INVALID_JSON', message: 'Body is not valid JSON' },
};

function statusCodeOf(code: ErrorCode): number {
  const status = ERROR_CODES[code];
  // Deployment-only codes (422 family) are never HTTP answers of their own; treat as a bad request.
  return status === 422 ? 400 : status;
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError | DeployError | Error, request: FastifyRequest, reply: FastifyReply) => {
    if (error instanceof DeployError) {
      const status = statusCodeOf(error.code);
      if (error.retryAfterSeconds !== undefined) void reply.header('retry-after', String(error.retryAfterSeconds));
      if (error.code === 'SERVER_BUSY') {
        // A capacity refusal, not a fault: the message says which limit (no internals in it).
        request.log.warn({ code: error.code }, error.message);
        return reply.code(503).send(errorBody(error.code, error.message, error.details));
      }
      if (status >= 500) {
        request.log.error({ err: error }, 'request failed');
        if (error.code === 'DEPENDENCY_UNAVAILABLE') {
          void reply.header('retry-after', String(error.retryAfterSeconds ?? 5));
          return reply.code(503).send(errorBody(error.code, 'A dependency of the service is unavailable; try again shortly'));
        }
        return reply.code(status).send(errorBody(error.code, status === 501 ? error.message : 'Internal error'));
      }
      return reply.code(status).send(errorBody(error.code, error.message, error.details));
    }
    const fastifyError = error as FastifyError;
    if (fastifyError.validation !== undefined) {
      const context = fastifyError.validationContext ?? 'body';
      const details = validationDetails(fastifyError.validation, context);
      const fields = details.map((d) => d.field).slice(0, 5).join(', ');
      return reply.code(400).send(errorBody('VALIDATION_ERROR', `Invalid ${context}: ${fields}`, details));
    }
    const known = fastifyError.code === undefined ? undefined : FASTIFY_CODES[fastifyError.code];
    if (known !== undefined) return reply.code(statusCodeOf(known.code)).send(errorBody(known.code, known.message));
    if (error instanceof SyntaxError || fastifyError.statusCode === 400) {
      return reply.code(400).send(errorBody('INVALID_JSON', 'Body is not valid JSON'));
    }
    if (typeof fastifyError.statusCode === 'number' && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
      return reply.code(fastifyError.statusCode).send(errorBody('BAD_REQUEST', fastifyError.message));
    }
    request.log.error({ err: error }, 'unhandled error');
    return reply.code(500).send(errorBody('INTERNAL_ERROR', 'Internal error'));
  });

  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send(errorBody('NOT_FOUND', `No route ${request.method} ${request.url.split('?')[0] ?? ''}`)),
  );
}

/** What Node's HTTP parser refuses before Fastify sees a request, and how it is answered. */
const CLIENT_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  HPE_HEADER_OVERFLOW: { status: 431, code: 'HEADERS_TOO_LARGE', message: 'The request line and headers are larger than the server accepts (16 KiB)' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, code: 'REQUEST_TIMEOUT', message: 'The request was not received in time' },
  ERR_HTTP_HEADERS_TIMEOUT: { status: 408, code: 'REQUEST_TIMEOUT', message: 'The request headers were not received in time' },
};

/**
 * Fastify's `clientErrorHandler`: an oversized header or URL (431), a malformed request (400) or a
 * slow one (408) gets the documented error shape too, instead of Fastify's own body. The connection
 * is closed after the answer, as Node does: what follows on it cannot be parsed.
 */
export function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  if (!socket.writable) {
    socket.destroy(error);
    return;
  }
  const known = error.code === undefined ? undefined : CLIENT_ERRORS[error.code];
  const answer = known ?? { status: 400, code: 'BAD_REQUEST', message: 'The request is not valid HTTP' };
  const body = JSON.stringify(errorBody(answer.code, answer.message));
  socket.end(
    `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? ''}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}
