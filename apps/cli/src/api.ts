import type { Connection } from './config.ts';
import { ApiError } from './errors.ts';

export interface LogLine {
  seq?: number;
  timestamp: string;
  step: string | null;
  level: string;
  message: string;
}

export interface StepState {
  status: string;
  startedAt: string | null;
  finishedAt: string | null;
  error: string | null;
}

export interface DeploymentStatus {
  deploymentId: string;
  projectId: string;
  environment: string;
  status: string;
  currentStep: string | null;
  progress: number;
  attempt: number;
  url: string | null;
  error: string | null;
  errorCode: string | null;
  steps?: Record<string, StepState>;
  /** Services before issue 12 / 14 leave these out. */
  kind?: string;
  rollbackOf?: string | null;
  redeployOf?: string | null;
  createdBy?: { tokenId: string; tokenName: string | null } | null;
  source?: { digest: string; fileCount: number; bytes: number; storedFiles: number; storedBytes: number };
  createdAt?: string;
  finishedAt?: string | null;
}

/** What `zepid` asks of the API: the public HTTP API with a bearer token, nothing else. */
export class ApiClient {
  readonly connection: Connection;
  /** Bytes of request bodies sent, so `deploy` can say how much it uploaded. */
  sentBytes = 0;

  constructor(connection: Connection) {
    this.connection = connection;
  }

  url(path: string): string {
    return `${this.connection.apiUrl}${path}`;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${this.connection.token}`, 'user-agent': 'zepid-cli/3', ...extra };
  }

  async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    if (payload !== undefined) this.sentBytes += Buffer.byteLength(payload);
    let response: Response;
    try {
      response = await fetch(this.url(path), {
        method,
        headers: this.headers(payload === undefined ? headers : { 'content-type': 'application/json', ...headers }),
        body: payload,
      });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new ApiError(0, 'UNREACHABLE', `cannot reach ${this.connection.apiUrl}: ${cause?.code ?? cause?.message ?? (error as Error).message}`);
    }
    const text = await response.text();
    let parsed: unknown = null;
    try {
      parsed = text === '' ? null : JSON.parse(text);
    } catch {
      // Not JSON: a proxy's page or similar; reported below by status.
    }
    if (!response.ok) {
      const shape = parsed as { error?: unknown; message?: unknown; details?: unknown } | null;
      const code = typeof shape?.error === 'string' ? shape.error : `HTTP_${response.status}`;
      const message = typeof shape?.message === 'string' ? shape.message : `${method} ${path} answered ${response.status}${text ? `: ${text.slice(0, 200)}` : ''}`;
      throw new ApiError(response.status, code, message, shape?.details);
    }
    return parsed as T;
  }

  status(id: string): Promise<DeploymentStatus> {
    return this.request('GET', `/deploy/${encodeURIComponent(id)}/status`);
  }

  async logs(id: string): Promise<LogLine[]> {
    return (await this.request<{ logs: LogLine[] }>('GET', `/deploy/${encodeURIComponent(id)}/logs`)).logs;
  }
}
