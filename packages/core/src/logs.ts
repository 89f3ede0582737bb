import type { StepName } from './glossary.ts';
import { LIMITS } from './limits.ts';

/** One line of a deployment's log, stored as NDJSON in the artifact store. */
export interface LogLine {
  timestamp: string;
  step: StepName | null;
  level: 'info' | 'warn' | 'error';
  message: string;
}

export function formatLogLine(line: LogLine): string {
  return `${line.timestamp} [${line.step ?? 'deployment'}] ${line.level === 'info' ? '' : `${line.level.toUpperCase()}: `}${line.message}`;
}

/** Parses stored NDJSON, skipping a torn last line (a crash mid-append) instead of failing. */
export function parseLogLines(ndjson: string): LogLine[] {
  const lines: LogLine[] = [];
  for (const raw of ndjson.split('\n')) {
    if (raw.trim() === '') continue;
    try {
      lines.push(JSON.parse(raw) as LogLine);
    } catch {
      // a partial line at the start of a tail read or the end of a torn append
    }
  }
  return lines;
}

/**
 * Replaces secret values in text, like CI systems mask secrets in build output. Values shorter than
 * 4 characters are not masked: they would shred ordinary text and cannot be kept secret by masking.
 */
export class SecretMasker {
  private readonly values: string[];

  constructor(secrets: Iterable<string>) {
    const unique = new Set<string>();
    for (const value of secrets) {
      if (value.length < 4) continue;
      unique.add(value);
      // Also the forms a build is likely to print: JSON-escaped and base64.
      unique.add(JSON.stringify(value).slice(1, -1));
      unique.add(Buffer.from(value).toString('base64'));
    }
    // Longest first, so a secret containing another is masked whole.
    this.values = [...unique].filter((value) => value.length >= 4).sort((a, b) => b.length - a.length);
  }

  mask(text: string): string {
    let masked = text;
    for (const value of this.values) {
      if (masked.includes(value)) masked = masked.split(value).join('***');
    }
    return masked;
  }
}

export function truncateLine(message: string): string {
  return message.length > LIMITS.logLineLength ? `${message.slice(0, LIMITS.logLineLength)}… (line truncated)` : message;
}

/** Paths pino must never write, in either app: tokens, and anything carrying env variable values. */
export const LOG_REDACT_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  'envVariables',
  '*.envVariables',
  'body.envVariables',
  'token',
  '*.token',
];
